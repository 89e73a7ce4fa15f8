#pragma once
// Helpers shared by the nn parity tests: random values, the JSON module spec
// that both rnnkit and the PyTorch oracle (tests/parity/cases_nn.py) build,
// strings carried as int64 tensors, the seeded test fixture, and EXPECT_ERROR.
#include <gtest/gtest.h>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "rnnkit/nn/container.h"
#include "rnnkit/nn/functional.h"
#include "rnnkit/nn/init.h"
#include "support/oracle.h"

// In a SeededTest: names the seed in every failure of the enclosing scope.
#define TRACE_SEED() SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed_))

// Runs stmt and expects it to throw rnnkit::Error whose message contains substring.
#define EXPECT_ERROR(stmt, substring)                                                           \
  do {                                                                                          \
    try {                                                                                       \
      stmt;                                                                                     \
      ADD_FAILURE() << "expected rnnkit::Error containing \"" << (substring) << "\": " #stmt; \
    } catch (const rnnkit::Error& e) {                                                          \
      EXPECT_NE(std::string(e.what()).find(substring), std::string::npos)                       \
          << "message: " << e.what() << "\nexpected to contain: " << (substring);              \
    }                                                                                           \
  } while (0)

namespace rnnkit::testing::nn_util {

using nlohmann::json;
namespace nn = rnnkit::nn;

// A fixture whose generator gen_ starts from a fresh seed (printed; replay it
// with RNNKIT_TEST_SEED). Tests name the seed in failures with TRACE_SEED().
class SeededTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = rnnkit::testing::fresh_seed();
    gen_.manual_seed(seed_);
    std::cout << "seed " << seed_ << " (replay with RNNKIT_TEST_SEED)\n";
  }
  uint64_t seed_ = 0;
  Generator gen_;
};

inline int64_t rnd(Generator& g, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(g.next_below(static_cast<uint64_t>(hi - lo + 1)));
}
inline bool coin(Generator& g) { return g.next_below(2) == 1; }
inline double uniform(Generator& g, double lo, double hi) { return lo + (hi - lo) * g.next_double(); }

inline int64_t shape_numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

inline Tensor random_tensor(const Shape& shape, Dtype dtype, Generator& g, double lo = -2, double hi = 2) {
  return rand(shape, TensorOptions(kFloat64), &g).mul_(hi - lo).add_(full({}, lo, kFloat64)).to(dtype);
}
inline Tensor random_indices(const Shape& shape, int64_t lo, int64_t hi, Generator& g) {
  std::vector<int64_t> v(static_cast<size_t>(shape_numel_of(shape)));
  for (auto& x : v) x = rnd(g, lo, hi);
  return from_vector(v, {static_cast<int64_t>(v.size())}).reshape(shape);
}

inline std::string decode(const Tensor& codes) {
  std::string s;
  for (int64_t c : codes.to_vector<int64_t>()) s += static_cast<char>(c);
  return s;
}

inline std::string to_string(const nn::Module& m) {
  std::ostringstream os;
  os << m;
  return os.str();
}

inline const char* dtype_key(Dtype d) { return d == kFloat64 ? "float64" : "float32"; }
inline double tolerance(Dtype d) { return d == kFloat64 ? 1e-10 : 1e-5; }

// A bare module with a printed name and named children (PyTorch: a class deriving nn.Module).
class CustomImpl : public nn::Module {
 public:
  explicit CustomImpl(std::string name) : nn::Module(std::move(name)) {}
  template <typename M>
  void add(const std::string& name, std::shared_ptr<M> m) {
    register_module(name, std::shared_ptr<nn::Module>(m));
  }
};

template <typename T>
T opt(const json& spec, const char* key, T fallback) {
  if (spec.contains("kwargs") && spec["kwargs"].contains(key) && !spec["kwargs"][key].is_null())
    return spec["kwargs"][key].get<T>();
  return fallback;
}
inline bool has(const json& spec, const char* key) {
  return spec.contains("kwargs") && spec["kwargs"].contains(key) && !spec["kwargs"][key].is_null();
}

// Appends m to seq as its concrete type, so Sequential can call its forward.
template <typename... Impls>
void push_as(nn::SequentialImpl& seq, const std::string& name, const std::shared_ptr<nn::Module>& m) {
  bool done = false;
  auto try_type = [&](auto* tag) {
    using Impl = std::remove_pointer_t<decltype(tag)>;
    auto p = std::dynamic_pointer_cast<Impl>(m);
    if (done || !p) return;
    if (name.empty())
      seq.push_back(p);
    else
      seq.push_back(name, p);
    done = true;
  };
  (try_type(static_cast<Impls*>(nullptr)), ...);
  if (!done) name.empty() ? seq.push_back(m) : seq.push_back(name, m);
}
inline void push_typed(nn::SequentialImpl& seq, const std::string& name, const std::shared_ptr<nn::Module>& m) {
  push_as<nn::LinearImpl, nn::EmbeddingImpl, nn::DropoutImpl, nn::ReLUImpl, nn::TanhImpl, nn::SigmoidImpl,
          nn::SoftmaxImpl, nn::LogSoftmaxImpl, nn::LayerNormImpl, nn::Conv1dImpl, nn::SequentialImpl>(seq, name, m);
}

// Builds the rnnkit module a spec describes (see cases_nn.py); `tensors`
// supplies loss weights named in "tensor_kwargs".
inline std::shared_ptr<nn::Module> build(const json& spec, Generator* gen = nullptr,
                                         const StateDict* tensors = nullptr) {
  const std::string type = spec["type"];
  const json args = spec.value("args", json::array());
  auto tensor_kw = [&](const char* name) {
    if (!spec.contains("tensor_kwargs")) return Tensor();
    for (const auto& n : spec["tensor_kwargs"])
      if (n == name) return tensors->at(name);
    return Tensor();
  };
  if (type == "Custom") {
    auto m = std::make_shared<CustomImpl>(spec["name"].get<std::string>());
    for (const auto& kv : spec.value("children", json::array()))
      m->add(kv[0].get<std::string>(), build(kv[1], gen, tensors));
    return m;
  }
  if (type == "Sequential") {
    auto m = std::make_shared<nn::SequentialImpl>();
    if (spec.contains("named"))
      for (const auto& kv : spec["named"]) push_typed(*m, kv[0].get<std::string>(), build(kv[1], gen, tensors));
    else
      for (const auto& c : spec["children"]) push_typed(*m, "", build(c, gen, tensors));
    return m;
  }
  if (type == "ModuleList") {
    auto m = std::make_shared<nn::ModuleListImpl>();
    for (const auto& c : spec["children"]) m->push_back(build(c, gen, tensors));
    return m;
  }
  if (type == "ModuleDict") {
    auto m = std::make_shared<nn::ModuleDictImpl>();
    for (const auto& kv : spec["named"]) m->insert(kv[0].get<std::string>(), build(kv[1], gen, tensors));
    return m;
  }
  if (type == "Linear")
    return std::make_shared<nn::LinearImpl>(nn::LinearOptions(args[0], args[1]).bias(opt(spec, "bias", true)), gen);
  if (type == "Embedding") {
    nn::EmbeddingOptions o(args[0], args[1]);
    if (has(spec, "padding_idx")) o.padding_idx(opt<int64_t>(spec, "padding_idx", 0));
    if (has(spec, "max_norm")) o.max_norm(opt<double>(spec, "max_norm", 0));
    o.norm_type(opt(spec, "norm_type", 2.0)).scale_grad_by_freq(opt(spec, "scale_grad_by_freq", false));
    return std::make_shared<nn::EmbeddingImpl>(o, gen);
  }
  if (type == "Dropout")
    return std::make_shared<nn::DropoutImpl>(
        nn::DropoutOptions(opt(spec, "p", 0.5)).inplace(opt(spec, "inplace", false)));
  if (type == "ReLU") return std::make_shared<nn::ReLUImpl>(nn::ReLUOptions(opt(spec, "inplace", false)));
  if (type == "Tanh") return std::make_shared<nn::TanhImpl>();
  if (type == "Sigmoid") return std::make_shared<nn::SigmoidImpl>();
  if (type == "Softmax") return std::make_shared<nn::SoftmaxImpl>(opt<int64_t>(spec, "dim", 0));
  if (type == "LogSoftmax") return std::make_shared<nn::LogSoftmaxImpl>(opt<int64_t>(spec, "dim", 0));
  if (type == "LayerNorm")
    return std::make_shared<nn::LayerNormImpl>(nn::LayerNormOptions(args[0].get<Shape>())
                                                   .eps(opt(spec, "eps", 1e-5))
                                                   .elementwise_affine(opt(spec, "elementwise_affine", true)));
  if (type == "Conv1d") {
    nn::Conv1dOptions o(args[0], args[1], args[2]);
    o.stride(opt<int64_t>(spec, "stride", 1))
        .dilation(opt<int64_t>(spec, "dilation", 1))
        .groups(opt<int64_t>(spec, "groups", 1))
        .bias(opt(spec, "bias", true))
        .padding_mode(opt<std::string>(spec, "padding_mode", "zeros"));
    if (has(spec, "padding")) {
      const json& p = spec["kwargs"]["padding"];
      if (p.is_string())
        o.padding(p.get<std::string>());
      else
        o.padding(p.get<int64_t>());
    }
    return std::make_shared<nn::Conv1dImpl>(o, gen);
  }
  const std::string reduction = opt<std::string>(spec, "reduction", "mean");
  if (type == "CrossEntropyLoss")
    return std::make_shared<nn::CrossEntropyLossImpl>(nn::CrossEntropyLossOptions()
                                                          .weight(tensor_kw("weight"))
                                                          .ignore_index(opt<int64_t>(spec, "ignore_index", -100))
                                                          .reduction(reduction)
                                                          .label_smoothing(opt(spec, "label_smoothing", 0.0)));
  if (type == "NLLLoss")
    return std::make_shared<nn::NLLLossImpl>(nn::NLLLossOptions()
                                                 .weight(tensor_kw("weight"))
                                                 .ignore_index(opt<int64_t>(spec, "ignore_index", -100))
                                                 .reduction(reduction));
  if (type == "BCEWithLogitsLoss")
    return std::make_shared<nn::BCEWithLogitsLossImpl>(nn::BCEWithLogitsLossOptions()
                                                           .weight(tensor_kw("weight"))
                                                           .pos_weight(tensor_kw("pos_weight"))
                                                           .reduction(reduction));
  if (type == "BCELoss")
    return std::make_shared<nn::BCELossImpl>(nn::BCELossOptions().weight(tensor_kw("weight")).reduction(reduction));
  if (type == "MSELoss") return std::make_shared<nn::MSELossImpl>(nn::MSELossOptions().reduction(reduction));
  if (type == "L1Loss") return std::make_shared<nn::L1LossImpl>(nn::L1LossOptions().reduction(reduction));
  if (type == "SmoothL1Loss")
    return std::make_shared<nn::SmoothL1LossImpl>(
        nn::SmoothL1LossOptions().reduction(reduction).beta(opt(spec, "beta", 1.0)));
  throw Error("nn_test_util::build: unknown module type " + type);
}

// The module's forward, for the layer types a spec can describe.
inline Tensor forward(const std::shared_ptr<nn::Module>& m, const Tensor& x) {
  if (auto p = std::dynamic_pointer_cast<nn::LinearImpl>(m)) return p->forward(x);
  if (auto p = std::dynamic_pointer_cast<nn::EmbeddingImpl>(m)) return p->forward(x);
  if (auto p = std::dynamic_pointer_cast<nn::DropoutImpl>(m)) return p->forward(x);
  if (auto p = std::dynamic_pointer_cast<nn::ReLUImpl>(m)) return p->forward(x);
  if (auto p = std::dynamic_pointer_cast<nn::TanhImpl>(m)) return p->forward(x);
  if (auto p = std::dynamic_pointer_cast<nn::SigmoidImpl>(m)) return p->forward(x);
  if (auto p = std::dynamic_pointer_cast<nn::SoftmaxImpl>(m)) return p->forward(x);
  if (auto p = std::dynamic_pointer_cast<nn::LogSoftmaxImpl>(m)) return p->forward(x);
  if (auto p = std::dynamic_pointer_cast<nn::LayerNormImpl>(m)) return p->forward(x);
  if (auto p = std::dynamic_pointer_cast<nn::Conv1dImpl>(m)) return p->forward(x);
  if (auto p = std::dynamic_pointer_cast<nn::SequentialImpl>(m)) return p->forward(x);
  throw Error("nn_test_util::forward: no Tensor forward for " + m->name());
}

inline StateDict with_prefix(const StateDict& sd, const std::string& prefix) {
  StateDict out;
  for (const auto& kv : sd) out.insert(prefix + kv.first, kv.second);
  return out;
}

}  // namespace rnnkit::testing::nn_util
