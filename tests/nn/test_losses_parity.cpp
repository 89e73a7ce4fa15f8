// Live PyTorch parity of the losses: values and gradients (input, and target
// where PyTorch differentiates it) for every reduction, with class weights,
// ignore_index, label smoothing, pos_weight, random shapes, float32 (rel <=
// 1e-5) and float64 (rel <= 1e-10); and PyTorch's error messages, verbatim.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/cpu/rnn_simd.h"
#include "nn/nn_test_util.h"

using namespace rnnkit;
using namespace rnnkit::testing::nn_util;
using rnnkit::testing::oracle;

namespace {

const Dtype kDtypes[] = {kFloat32, kFloat64};
const char* kReductions[] = {"none", "mean", "sum"};

struct LossInputs {
  Tensor input, target, weight, pos_weight;
  bool target_grad = false;
};

// Builds the loss from spec here and in PyTorch and compares value and gradients.
void check_loss(const json& spec, const LossInputs& in, Dtype dtype, Generator& g) {
  SCOPED_TRACE(spec.dump() + " input " + shape_str(in.input.sizes()) + " target " + shape_str(in.target.sizes()));
  StateDict tensors;
  if (in.weight.defined()) tensors.insert("weight", in.weight.to(dtype));
  if (in.pos_weight.defined()) tensors.insert("pos_weight", in.pos_weight.to(dtype));
  auto module = build(spec, nullptr, &tensors);
  Tensor x = in.input.to(dtype).detach().requires_grad_();
  Tensor t = in.target.is_floating_point() ? in.target.to(dtype).detach() : in.target;
  if (in.target_grad) t.requires_grad_();
  Tensor out;
  const std::string type = spec["type"];
  if (auto m = std::dynamic_pointer_cast<nn::CrossEntropyLossImpl>(module)) out = m->forward(x, t);
  if (auto m = std::dynamic_pointer_cast<nn::NLLLossImpl>(module)) out = m->forward(x, t);
  if (auto m = std::dynamic_pointer_cast<nn::BCEWithLogitsLossImpl>(module)) out = m->forward(x, t);
  if (auto m = std::dynamic_pointer_cast<nn::BCELossImpl>(module)) out = m->forward(x, t);
  if (auto m = std::dynamic_pointer_cast<nn::MSELossImpl>(module)) out = m->forward(x, t);
  if (auto m = std::dynamic_pointer_cast<nn::L1LossImpl>(module)) out = m->forward(x, t);
  if (auto m = std::dynamic_pointer_cast<nn::SmoothL1LossImpl>(module)) out = m->forward(x, t);
  ASSERT_TRUE(out.defined()) << type;
  Tensor grad_out = random_tensor(out.sizes(), dtype, g, 0.5, 2);
  out.backward(grad_out);
  tensors.insert("input", x.detach());
  tensors.insert("target", t.detach());
  tensors.insert("grad_out", grad_out);
  StateDict want = oracle().call("nn_loss", {{"spec", spec}, {"target_grad", in.target_grad}}, tensors);
  const double tol = tolerance(dtype);
  const std::string label = type + (dtype == kFloat64 ? "/f64" : "/f32");
  EXPECT_CLOSE(out, want.at("out"), tol, label + " out");
  EXPECT_CLOSE(x.grad(), want.at("grad_input"), tol, label + " grad_input");
  if (in.target_grad) EXPECT_CLOSE(t.grad(), want.at("grad_target"), tol, label + " grad_target");
  // Module state: the class weights are buffers, as in PyTorch.
  EXPECT_EQ(module->state_dict().size(), static_cast<size_t>(in.weight.defined()) + in.pos_weight.defined());
}

// input shape with C classes: [C], [N, C], [N, C, d1] or [N, C, d1, d2]; target shape alongside.
std::pair<Shape, Shape> class_shapes(int64_t C, Generator& g) {
  const int64_t kind = rnd(g, 0, 3), N = rnd(g, 1, 6);
  if (kind == 0) return {{C}, {}};
  Shape input{N, C}, target{N};
  for (int64_t d = 1; d < kind; ++d) {
    const int64_t s = rnd(g, 1, 4);
    input.push_back(s);
    target.push_back(s);
  }
  return {input, target};
}

class LossesParity : public SeededTest {};

// Class-index targets with a fraction set to ignore_index.
Tensor class_targets(const Shape& shape, int64_t C, int64_t ignore_index, bool with_ignored, Generator& g) {
  std::vector<int64_t> v(static_cast<size_t>(shape_numel_of(shape)));
  for (auto& t : v) t = (with_ignored && g.next_below(4) == 0) ? ignore_index : rnd(g, 0, C - 1);
  return from_vector(v, {static_cast<int64_t>(v.size())}).reshape(shape);
}

// One random class-index case of `type` (CrossEntropyLoss or NLLLoss): C
// classes, random reduction, sometimes an ignore_index (never every target
// ignored: "mean" would be 0/0 = NaN on both sides, and NaN never compares close),
// sometimes per-class weights; extra_kwargs(kwargs) adds the loss's own options;
// input(shape) makes the input.
template <class ExtraKwargs, class Input>
void check_class_index_loss(const std::string& type, int64_t C, Dtype dtype, Generator& g, ExtraKwargs&& extra_kwargs,
                            Input&& input) {
  auto [xs, ts] = class_shapes(C, g);
  json kwargs = {{"reduction", kReductions[rnd(g, 0, 2)]}};
  int64_t ignore = -100;
  if (coin(g)) {
    ignore = rnd(g, 0, C - 1);
    kwargs["ignore_index"] = ignore;
  }
  extra_kwargs(kwargs);
  LossInputs in;
  json spec = {{"type", type}, {"kwargs", kwargs}};
  if (coin(g)) {
    in.weight = random_tensor({C}, kFloat64, g, 0.2, 2);
    spec["tensor_kwargs"] = {"weight"};
  }
  in.input = input(xs);
  do {
    in.target = class_targets(ts, C, ignore, coin(g), g);
  } while (ne(in.target, full({}, static_cast<double>(ignore), kInt64)).to(kInt64).sum().item() == 0);
  check_loss(spec, in, dtype, g);
}

TEST_F(LossesParity, CrossEntropyClassIndices) {
  TRACE_SEED();
  for (int trial = 0; trial < 16; ++trial)
    for (Dtype dtype : kDtypes)
      check_class_index_loss(
          "CrossEntropyLoss", rnd(gen_, 2, 8), dtype, gen_,
          [&](json& kwargs) {
            if (coin(gen_)) kwargs["label_smoothing"] = uniform(gen_, 0.0, 0.9);
          },
          [&](const Shape& xs) { return random_tensor(xs, kFloat64, gen_, -4, 4); });
}

TEST_F(LossesParity, CrossEntropyClassProbabilities) {
  TRACE_SEED();
  for (int trial = 0; trial < 8; ++trial)
    for (Dtype dtype : kDtypes) {
      const int64_t C = rnd(gen_, 2, 7);
      auto [xs, ts] = class_shapes(C, gen_);
      json kwargs = {{"reduction", kReductions[rnd(gen_, 0, 2)]}};
      if (coin(gen_)) kwargs["label_smoothing"] = uniform(gen_, 0.0, 0.9);
      json spec = {{"type", "CrossEntropyLoss"}, {"kwargs", kwargs}};
      LossInputs in;
      if (coin(gen_)) {
        in.weight = random_tensor({C}, kFloat64, gen_, 0.2, 2);
        spec["tensor_kwargs"] = {"weight"};
      }
      in.input = random_tensor(xs, kFloat64, gen_, -4, 4);
      in.target = softmax(random_tensor(xs, kFloat64, gen_, -2, 2), xs.size() == 1 ? 0 : 1);
      in.target_grad = true;
      check_loss(spec, in, dtype, gen_);
    }
}

TEST_F(LossesParity, CrossEntropyLanguageModelShape) {
  TRACE_SEED();
  // (T*N, vocab) logits, as a language model calls it: the parallel path.
  for (Dtype dtype : kDtypes) {
    const int64_t rows = rnd(gen_, 60, 120), vocab = rnd(gen_, 1000, 3000);
    LossInputs in;
    in.input = random_tensor({rows, vocab}, kFloat64, gen_, -6, 6);
    in.target = class_targets({rows}, vocab, 0, true, gen_);
    check_loss({{"type", "CrossEntropyLoss"}, {"kwargs", {{"ignore_index", 0}}}}, in, dtype, gen_);
    check_loss({{"type", "CrossEntropyLoss"}, {"kwargs", {{"label_smoothing", 0.1}, {"reduction", "sum"}}}}, in, dtype,
               gen_);
  }
}

TEST_F(LossesParity, NLLLoss) {
  TRACE_SEED();
  for (int trial = 0; trial < 12; ++trial)
    for (Dtype dtype : kDtypes)
      check_class_index_loss(
          "NLLLoss", rnd(gen_, 2, 8), dtype, gen_, [](json&) {},
          [&](const Shape& xs) {
            return log_softmax(random_tensor(xs, kFloat64, gen_, -3, 3), xs.size() == 1 ? 0 : 1);
          });
}

Shape random_shape(Generator& g) {
  Shape s(static_cast<size_t>(rnd(g, 1, 3)));
  for (auto& d : s) d = rnd(g, 1, 6);
  return s;
}

TEST_F(LossesParity, BCEWithLogits) {
  TRACE_SEED();
  for (int trial = 0; trial < 12; ++trial)
    for (Dtype dtype : kDtypes) {
      const Shape xs = random_shape(gen_);
      json spec = {{"type", "BCEWithLogitsLoss"}, {"kwargs", {{"reduction", kReductions[rnd(gen_, 0, 2)]}}}};
      json tensor_kwargs = json::array();
      LossInputs in;
      if (coin(gen_)) {
        in.weight = random_tensor(coin(gen_) ? xs : Shape{xs.back()}, kFloat64, gen_, 0.2, 2);
        tensor_kwargs.push_back("weight");
      }
      if (coin(gen_)) {
        in.pos_weight = random_tensor({xs.back()}, kFloat64, gen_, 0.2, 4);
        tensor_kwargs.push_back("pos_weight");
      }
      spec["tensor_kwargs"] = tensor_kwargs;
      // Large logits too: the stable form must not overflow.
      in.input = random_tensor(xs, kFloat64, gen_, trial % 3 == 0 ? -60 : -6, trial % 3 == 0 ? 60 : 6);
      in.target = random_tensor(xs, kFloat64, gen_, 0, 1);
      in.target_grad = true;
      check_loss(spec, in, dtype, gen_);
    }
}

TEST_F(LossesParity, BCE) {
  TRACE_SEED();
  for (int trial = 0; trial < 10; ++trial)
    for (Dtype dtype : kDtypes) {
      const Shape xs = random_shape(gen_);
      json spec = {{"type", "BCELoss"}, {"kwargs", {{"reduction", kReductions[rnd(gen_, 0, 2)]}}}};
      LossInputs in;
      if (coin(gen_)) {
        in.weight = random_tensor(coin(gen_) ? xs : Shape{xs.back()}, kFloat64, gen_, 0.2, 2);
        spec["tensor_kwargs"] = {"weight"};
      }
      in.input = random_tensor(xs, kFloat64, gen_, 0.01, 0.99);
      in.target = random_tensor(xs, kFloat64, gen_, 0, 1);
      in.target_grad = true;
      check_loss(spec, in, dtype, gen_);
    }
  // Inputs of exactly 0 and 1: each log is clamped to -100 (target gradient left out: it is infinite there).
  for (Dtype dtype : kDtypes) {
    LossInputs in;
    in.input = from_vector(std::vector<double>{0.0, 1.0, 0.0, 1.0, 0.5}, {5});
    in.target = from_vector(std::vector<double>{0.0, 1.0, 1.0, 0.0, 0.3}, {5});
    check_loss({{"type", "BCELoss"}, {"kwargs", {{"reduction", "none"}}}}, in, dtype, gen_);
  }
}

TEST_F(LossesParity, Regression) {
  TRACE_SEED();
  for (const char* type : {"MSELoss", "L1Loss", "SmoothL1Loss"})
    for (int trial = 0; trial < 8; ++trial)
      for (Dtype dtype : kDtypes) {
        const Shape xs = random_shape(gen_);
        json kwargs = {{"reduction", kReductions[rnd(gen_, 0, 2)]}};
        if (std::string(type) == "SmoothL1Loss") kwargs["beta"] = trial == 0 ? 0.0 : uniform(gen_, 0.1, 2.0);
        LossInputs in;
        in.input = random_tensor(xs, kFloat64, gen_, -3, 3);
        // Sometimes a target that broadcasts (PyTorch warns and broadcasts).
        Shape ts = xs;
        if (trial % 3 == 2) ts.back() = 1;
        in.target = random_tensor(ts, kFloat64, gen_, -3, 3);
        in.target_grad = true;
        check_loss({{"type", type}, {"kwargs", kwargs}}, in, dtype, gen_);
      }
}

TEST_F(LossesParity, FunctionalFormsMatchModules) {
  TRACE_SEED();
  Tensor x = random_tensor({5, 4}, kFloat64, gen_), t = class_targets({5}, 4, -100, false, gen_);
  Tensor w = random_tensor({4}, kFloat64, gen_, 0.5, 1.5);
  auto opts = nn::CrossEntropyLossOptions().weight(w).label_smoothing(0.2).reduction(nn::kSum);
  EXPECT_TRUE(equal(nn::F::cross_entropy(x, t, opts), nn::CrossEntropyLoss(opts)->forward(x, t)));
  EXPECT_TRUE(equal(nn::F::nll_loss(x.log_softmax(1), t), nn::NLLLoss()->forward(x.log_softmax(1), t)));
  // cross_entropy == nll_loss(log_softmax) without smoothing.
  EXPECT_LT(rnnkit::testing::rel_error(nn::F::cross_entropy(x, t), nn::F::nll_loss(x.log_softmax(1), t)), 1e-14);
  Tensor y = random_tensor({5, 4}, kFloat64, gen_, 0, 1);
  EXPECT_TRUE(equal(nn::F::mse_loss(x, y, nn::kNone), nn::MSELoss(nn::kNone)->forward(x, y)));
  EXPECT_EQ(nn::F::l1_loss(x, y, nn::L1LossOptions().reduction("sum")).dim(), 0);
  EXPECT_THROW(nn::MSELossOptions().reduction("avg"), Error);
}

// Infinite logits as PyTorch 1.13 treats them (F.cross_entropy, reduction
// "none"): a row holding +inf, or only -inf, gives NaN; a -inf logit beside
// finite ones is an exp of 0. Float and double, on every instruction set (the
// float rows take the vector kernels where there are).
TEST(LossesSpecialValues, CrossEntropyOfInfiniteLogits) {
  namespace simd = kernels::cpu::simd;
  const simd::Isa saved = simd::active_isa();
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor x = from_vector(std::vector<double>{inf, 1, -inf, -inf, -inf, 1, 0, 1}, {4, 2});
  const Tensor t = from_vector(std::vector<int64_t>{1, 1, 1, 0}, {4});
  for (simd::Isa isa : {simd::Isa::kAvx512, simd::Isa::kAvx2, simd::Isa::kScalar}) {
    if (isa > simd::detected_isa()) continue;
    simd::set_active_isa(isa);
    for (Dtype dtype : {kFloat32, kFloat64}) {
      SCOPED_TRACE(std::string(simd::isa_name(isa)) + (dtype == kFloat32 ? " float" : " double"));
      const std::vector<double> l = nn::F::cross_entropy(x.to(dtype), t, nn::CrossEntropyLossOptions().reduction(nn::kNone)).to(kFloat64).to_vector<double>();
      EXPECT_TRUE(std::isnan(l[0]));
      EXPECT_TRUE(std::isnan(l[1]));
      EXPECT_EQ(l[2], 0.0);
      EXPECT_NEAR(l[3], std::log1p(std::exp(1.0)), 1e-6);
    }
  }
  simd::set_active_isa(saved);
}

// PyTorch's message for the same mistake, verbatim.
void expect_same_error(const json& spec, const Tensor& input, const Tensor& target, const StateDict& extra = {}) {
  SCOPED_TRACE(spec.dump());
  StateDict tensors = extra;
  tensors.insert("input", input);
  tensors.insert("target", target);
  StateDict want = oracle().call("nn_error", {{"spec", spec}, {"args", {"$input", "$target"}}}, tensors);
  ASSERT_TRUE(want.contains("message")) << "PyTorch accepted it";
  const std::string expected = decode(want.at("message"));
  try {
    auto module = build(spec, nullptr, &tensors);
    Tensor out;
    if (auto m = std::dynamic_pointer_cast<nn::CrossEntropyLossImpl>(module)) out = m->forward(input, target);
    if (auto m = std::dynamic_pointer_cast<nn::NLLLossImpl>(module)) out = m->forward(input, target);
    if (auto m = std::dynamic_pointer_cast<nn::BCEWithLogitsLossImpl>(module)) out = m->forward(input, target);
    if (auto m = std::dynamic_pointer_cast<nn::BCELossImpl>(module)) out = m->forward(input, target);
    if (auto m = std::dynamic_pointer_cast<nn::MSELossImpl>(module)) out = m->forward(input, target);
    if (auto m = std::dynamic_pointer_cast<nn::SmoothL1LossImpl>(module)) out = m->forward(input, target);
    ADD_FAILURE() << "no error; PyTorch says: " << expected;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), expected);
  }
}

TEST_F(LossesParity, ErrorMessages) {
  const json ce = {{"type", "CrossEntropyLoss"}};
  auto x = [&](const Shape& s) { return random_tensor(s, kFloat32, gen_); };
  auto idx = [](std::vector<int64_t> v, const Shape& s) { return from_vector(v, s); };
  expect_same_error(ce, x({4, 3}), idx({0, 1, 2}, {3}));
  expect_same_error(ce, x({4, 3}), idx({0, 7, 1, 2}, {4}));
  expect_same_error(ce, x({4, 3}), idx({0, -1, 1, 2}, {4}));
  expect_same_error(ce, x({2, 3, 5}), idx({0, 1, 2, 0, 1, 2, 0, 1}, {2, 4}));
  expect_same_error(ce, x({2, 3, 2, 2}), idx({0, 1, 2, 0, 1, 2, 0, 1}, {2, 4}));
  expect_same_error(ce, x({4, 3}), idx({0, 1, 2, 0, 1, 2, 0, 1}, {4, 2}));
  expect_same_error(ce, x({4, 3}), x({4, 3}).to(kInt64));
  expect_same_error({{"type", "CrossEntropyLoss"}, {"kwargs", {{"label_smoothing", 1.5}}}}, x({4, 3}),
                    idx({0, 1, 2, 0}, {4}));
  expect_same_error({{"type", "CrossEntropyLoss"}, {"kwargs", {{"ignore_index", 1}}}}, x({4, 3}), x({4, 3}));
  StateDict w;
  w.insert("weight", x({4}));
  expect_same_error({{"type", "CrossEntropyLoss"}, {"tensor_kwargs", {"weight"}}}, x({4, 3}), idx({0, 1, 2, 0}, {4}),
                    w);
  expect_same_error({{"type", "NLLLoss"}}, x({4, 3}), idx({0, 1, 3, 0}, {4}));
  expect_same_error({{"type", "BCEWithLogitsLoss"}}, x({3, 1}), x({3}));
  expect_same_error({{"type", "BCELoss"}}, x({3, 1}), x({3}));
  expect_same_error({{"type", "BCELoss"}}, from_vector(std::vector<float>{0.5f, 1.5f}), x({2}));
  expect_same_error({{"type", "SmoothL1Loss"}, {"kwargs", {{"beta", -1.0}}}}, x({3}), x({3}));
}

}  // namespace
