#pragma once
// Random recurrent-layer and cell configurations run through rnnkit and, in
// batches, through PyTorch (tests/parity/cases_rnn.py, case "rnn_batch") with
// rnnkit's initial weights; then every output and gradient is compared.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "rnnkit/nn/rnn.h"
#include "rnnkit/ops.h"
#include "support/oracle.h"

namespace rnnkit::testing::rnn {

namespace nn = rnnkit::nn;
using nlohmann::json;
using nn::utils::rnn::PackedSequence;

// One configuration: its JSON (what PyTorch builds), the inputs PyTorch gets,
// and what rnnkit produced.
struct Case {
  json cfg;
  StateDict inputs;  // x, h0, c0, lengths, w.<param>, g_out, g_hn, g_cn
  StateDict got;     // out, h_n, c_n, grad_x, grad_h0, grad_c0, grad_w.<param>
  std::string label;  // "LSTM f32"
  std::string describe() const { return cfg.dump(); }
};

inline int64_t pick(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}
inline bool chance(std::mt19937_64& rng, double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }

inline bool is_cell(const std::string& kind) { return kind.size() > 4 && kind.substr(kind.size() - 4) == "Cell"; }

// Random sequence lengths (1 to steps) for each of the batch's entries, for a
// packed configuration.
inline void set_random_lengths(json& c, std::mt19937_64& rng) {
  std::vector<int64_t> lengths;
  const int64_t N = c["batch"], T = c["steps"];
  for (int64_t b = 0; b < N; ++b) lengths.push_back(pick(rng, 1, T));
  c["lengths"] = lengths;
}

// A random configuration of `kind` (RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell).
inline json random_config(const std::string& kind, std::mt19937_64& rng) {
  json c;
  c["kind"] = kind;
  // Mostly tiny sizes (edge cases, speed); one in five wide enough for the
  // kernels' vectorised and blocked paths.
  const bool wide = chance(rng, 0.2);
  c["input_size"] = wide ? pick(rng, 8, 48) : pick(rng, 1, 10);
  c["hidden_size"] = wide ? pick(rng, 16, 80) : pick(rng, 1, 12);
  c["bias"] = chance(rng, 0.75);
  c["has_state"] = chance(rng, 0.5);
  c["steps"] = pick(rng, 1, 6);
  c["batch"] = pick(rng, 1, 5);
  c["g_out"] = chance(rng, 0.85);
  c["g_hn"] = chance(rng, 0.7);
  c["g_cn"] = chance(rng, 0.7);
  // At least one term in the loss (a cell has no h_n; only the LSTM has c_n).
  const bool lstm = kind == "LSTM" || kind == "LSTMCell";
  const bool other_term = (!is_cell(kind) && c["g_hn"].get<bool>()) || (lstm && c["g_cn"].get<bool>());
  if (!c["g_out"].get<bool>() && !other_term) c["g_out"] = true;
  if (kind == "RNN" || kind == "RNNCell") c["nonlinearity"] = chance(rng, 0.5) ? "relu" : "tanh";
  if (is_cell(kind)) {
    c["unbatched"] = chance(rng, 0.25);
    return c;
  }
  c["num_layers"] = pick(rng, 1, 3);
  c["batch_first"] = chance(rng, 0.5);
  c["bidirectional"] = chance(rng, 0.5);
  const int64_t H = c["hidden_size"];
  c["proj_size"] = (kind == "LSTM" && H >= 2 && chance(rng, 0.4)) ? pick(rng, 1, H - 1) : 0;
  // Dropout configured but the module in eval mode: it must have no effect.
  if (chance(rng, 0.25)) {
    c["dropout"] = 0.5;
    c["eval"] = true;
  } else {
    c["dropout"] = 0.0;
  }
  const int64_t mode = pick(rng, 0, 9);  // 0-1 unbatched, 2-5 padded, 6-9 packed
  c["unbatched"] = mode < 2;
  c["packed"] = mode >= 6;
  if (c["packed"].get<bool>()) set_random_lengths(c, rng);
  return c;
}

// A random stacked layer (2-4 layers, long sequences, small batch, no
// projection), padded or packed; no_grad: run as inference (forward only, no
// graph), the case the wavefront schedule takes when unidirectional.
// relu: whether an Elman layer may use relu. Over this many steps and layers a
// float32 pre-activation now and then lands within rounding of relu's kink at
// 0, where rnnkit and PyTorch may round to opposite sides and the gradient
// through that unit is 1 in one and 0 in the other (seen once in ~2000 float32
// configurations: outputs equal to 1e-6, gradients off by a few percent); the
// callers allow it in float64, where that takes differences of ~1e-16.
inline json random_stacked_config(const std::string& kind, std::mt19937_64& rng, bool bidirectional, bool no_grad,
                                  bool relu) {
  json c;
  c["kind"] = kind;
  c["input_size"] = pick(rng, 1, 40);
  c["hidden_size"] = pick(rng, 1, 72);
  c["bias"] = chance(rng, 0.75);
  c["has_state"] = chance(rng, 0.5);
  c["steps"] = pick(rng, 32, 90);
  c["batch"] = pick(rng, 1, 8);
  c["g_out"] = true;
  c["g_hn"] = chance(rng, 0.7);
  c["g_cn"] = chance(rng, 0.7);
  if (kind == "RNN") c["nonlinearity"] = relu && chance(rng, 0.5) ? "relu" : "tanh";
  c["num_layers"] = pick(rng, 2, 4);
  c["batch_first"] = chance(rng, 0.5);
  c["bidirectional"] = bidirectional;
  c["proj_size"] = 0;
  c["dropout"] = chance(rng, 0.3) ? 0.5 : 0.0;
  c["eval"] = true;  // configured dropout has no effect in eval mode
  c["unbatched"] = false;
  c["packed"] = chance(rng, 0.5);
  if (c["packed"].get<bool>()) set_random_lengths(c, rng);
  c["no_grad"] = no_grad;
  return c;
}

// Builds the rnnkit module for cfg and exposes a uniform forward.
struct Model {
  std::shared_ptr<nn::Module> module;
  std::function<nn::RNNOutput(const Tensor&, const Tensor&, const Tensor&)> forward;
  std::function<nn::PackedRNNOutput(const PackedSequence&, const Tensor&, const Tensor&)> forward_packed;
  std::function<void(bool)> set_bf16_inference;
  std::function<void(bool)> set_bf16_products;
};

template <class Options>
Options layer_options(const json& c, Generator* gen) {
  Options o(c["input_size"].get<int64_t>(), c["hidden_size"].get<int64_t>());
  o.num_layers(c["num_layers"].get<int64_t>())
      .bias(c["bias"].get<bool>())
      .batch_first(c["batch_first"].get<bool>())
      .dropout(c["dropout"].get<double>())
      .bidirectional(c["bidirectional"].get<bool>())
      .generator(gen);
  return o;
}

inline Model build_model(const json& c, Generator* gen) {
  const std::string kind = c["kind"];
  Model m;
  if (kind == "LSTM") {
    nn::LSTM l(layer_options<nn::LSTMOptions>(c, gen).proj_size(c["proj_size"].get<int64_t>()));
    m.module = l.ptr();
    m.set_bf16_inference = [l](bool on) { l->set_bf16_inference(on); };
    m.set_bf16_products = [l](bool on) { l->set_bf16_products(on); };
    m.forward = [l](const Tensor& x, const Tensor& h, const Tensor& cc) { return l->forward(x, {h, cc}); };
    m.forward_packed = [l](const PackedSequence& x, const Tensor& h, const Tensor& cc) {
      return l->forward(x, {h, cc});
    };
  } else if (kind == "GRU") {
    nn::GRU l(layer_options<nn::GRUOptions>(c, gen));
    m.module = l.ptr();
    m.set_bf16_inference = [l](bool on) { l->set_bf16_inference(on); };
    m.set_bf16_products = [l](bool on) { l->set_bf16_products(on); };
    m.forward = [l](const Tensor& x, const Tensor& h, const Tensor&) { return l->forward(x, h); };
    m.forward_packed = [l](const PackedSequence& x, const Tensor& h, const Tensor&) { return l->forward(x, h); };
  } else if (kind == "RNN") {
    nn::RNN l(layer_options<nn::RNNOptions>(c, gen).nonlinearity(c["nonlinearity"].get<std::string>()));
    m.module = l.ptr();
    m.set_bf16_inference = [l](bool on) { l->set_bf16_inference(on); };
    m.set_bf16_products = [l](bool on) { l->set_bf16_products(on); };
    m.forward = [l](const Tensor& x, const Tensor& h, const Tensor&) { return l->forward(x, h); };
    m.forward_packed = [l](const PackedSequence& x, const Tensor& h, const Tensor&) { return l->forward(x, h); };
  } else if (kind == "LSTMCell") {
    nn::LSTMCell l(nn::LSTMCellOptions(c["input_size"], c["hidden_size"]).bias(c["bias"].get<bool>()).generator(gen));
    m.module = l.ptr();
    m.set_bf16_inference = [l](bool on) { l->set_bf16_inference(on); };
    m.set_bf16_products = [l](bool on) { l->set_bf16_products(on); };
    m.forward = [l](const Tensor& x, const Tensor& h, const Tensor& cc) {
      auto [h1, c1] = l->forward(x, {h, cc});
      return nn::RNNOutput{h1, Tensor(), c1};
    };
  } else if (kind == "GRUCell") {
    nn::GRUCell l(nn::GRUCellOptions(c["input_size"], c["hidden_size"]).bias(c["bias"].get<bool>()).generator(gen));
    m.module = l.ptr();
    m.set_bf16_inference = [l](bool on) { l->set_bf16_inference(on); };
    m.set_bf16_products = [l](bool on) { l->set_bf16_products(on); };
    m.forward = [l](const Tensor& x, const Tensor& h, const Tensor&) {
      return nn::RNNOutput{l->forward(x, h), Tensor(), Tensor()};
    };
  } else {
    nn::RNNCell l(nn::RNNCellOptions(c["input_size"], c["hidden_size"])
                      .bias(c["bias"].get<bool>())
                      .nonlinearity(c["nonlinearity"].get<std::string>())
                      .generator(gen));
    m.module = l.ptr();
    m.set_bf16_inference = [l](bool on) { l->set_bf16_inference(on); };
    m.set_bf16_products = [l](bool on) { l->set_bf16_products(on); };
    m.forward = [l](const Tensor& x, const Tensor& h, const Tensor&) {
      return nn::RNNOutput{l->forward(x, h), Tensor(), Tensor()};
    };
  }
  return m;
}

// Runs one configuration through rnnkit (forward, then backward of
// sum(out*g_out) + sum(h_n*g_hn) + sum(c_n*g_cn) over the terms cfg asks for).
inline Case run_rnnkit(json c, Dtype dtype, uint64_t seed) {
  Case k;
  Generator gen(seed);
  const std::string kind = c["kind"];
  const bool cell = is_cell(kind);
  const bool lstm = kind == "LSTM" || kind == "LSTMCell";
  Model m = build_model(c, &gen);
  if (dtype == kFloat64) m.module->to(kFloat64);
  if (c.value("eval", false)) m.module->eval();
  if (c.value("bf16_inference", false)) m.set_bf16_inference(true);
  if (c.value("bf16_products", false)) m.set_bf16_products(true);
  for (const auto& [name, p] : m.module->named_parameters()) k.inputs.insert("w." + name, p.detach().clone());

  const int64_t I = c["input_size"], H = c["hidden_size"], T = c["steps"], N = c["batch"];
  const bool unbatched = c.value("unbatched", false), packed = c.value("packed", false);
  const bool bf = c.value("batch_first", false) && !unbatched;
  const int64_t D = c.value("bidirectional", false) ? 2 : 1, L = c.value("num_layers", 1);
  const int64_t P = c.value("proj_size", 0), Hout = P > 0 ? P : H;
  const TensorOptions opts(dtype);
  Shape xs, hs, cs;
  if (cell) {
    xs = unbatched ? Shape{I} : Shape{N, I};
    hs = cs = unbatched ? Shape{H} : Shape{N, H};
  } else {
    xs = unbatched ? Shape{T, I} : bf ? Shape{N, T, I} : Shape{T, N, I};
    hs = unbatched ? Shape{D * L, Hout} : Shape{D * L, N, Hout};
    cs = unbatched ? Shape{D * L, H} : Shape{D * L, N, H};
  }
  Tensor x = randn(xs, opts, &gen).requires_grad_();
  Tensor h0, c0;
  if (c["has_state"].get<bool>()) {
    h0 = randn(hs, opts, &gen).requires_grad_();
    if (lstm) c0 = randn(cs, opts, &gen).requires_grad_();
  }
  k.inputs.insert("x", x.detach().clone());
  if (h0.defined()) k.inputs.insert("h0", h0.detach().clone());
  if (c0.defined()) k.inputs.insert("c0", c0.detach().clone());

  Tensor out, h_n, c_n;
  const bool no_grad = c.value("no_grad", false);
  std::unique_ptr<NoGradGuard> guard(no_grad ? new NoGradGuard : nullptr);
  if (packed) {
    const std::vector<int64_t> lengths = c["lengths"];
    k.inputs.insert("lengths", from_vector(lengths, {static_cast<int64_t>(lengths.size())}));
    PackedSequence p = nn::utils::rnn::pack_padded_sequence(x, lengths, bf, false);
    nn::PackedRNNOutput r = m.forward_packed(p, h0, c0);
    out = nn::utils::rnn::pad_packed_sequence(r.output, bf, 0.0, T).padded;
    h_n = r.h_n;
    c_n = r.c_n;
  } else {
    nn::RNNOutput r = m.forward(x, h0, c0);
    out = r.output;
    h_n = r.h_n;
    c_n = r.c_n;
  }
  guard.reset();
  Tensor loss;
  auto add_term = [&](const Tensor& y, const char* flag, const char* name) {
    if (no_grad || !y.defined() || !c[flag].get<bool>()) return;
    Tensor g = randn(y.sizes(), opts, &gen);
    k.inputs.insert(name, g);
    Tensor term = sum(mul(y, g));
    loss = loss.defined() ? add(loss, term) : term;
  };
  add_term(out, "g_out", "g_out");
  add_term(h_n, "g_hn", "g_hn");
  add_term(c_n, "g_cn", "g_cn");
  k.got.insert("out", out.detach());
  if (h_n.defined()) k.got.insert("h_n", h_n.detach());
  if (c_n.defined()) k.got.insert("c_n", c_n.detach());
  if (loss.defined()) {
    loss.backward();
    if (x.grad().defined()) k.got.insert("grad_x", x.grad());
    if (h0.defined() && h0.grad().defined()) k.got.insert("grad_h0", h0.grad());
    if (c0.defined() && c0.grad().defined()) k.got.insert("grad_c0", c0.grad());
    for (const auto& [name, p] : m.module->named_parameters())
      if (p.grad().defined()) k.got.insert("grad_w." + name, p.grad());
  }
  k.cfg = std::move(c);
  k.label = kind + (dtype == kFloat64 ? " f64" : " f32");
  return k;
}

// Sends the cases to PyTorch in one request and compares everything.
inline void compare_with_torch(std::vector<Case>& cases, double tol_forward, double tol_backward) {
  json configs = json::array();
  StateDict inputs;
  for (size_t i = 0; i < cases.size(); ++i) {
    configs.push_back(cases[i].cfg);
    for (const auto& [name, t] : cases[i].inputs) inputs.insert(std::to_string(i) + "." + name, t);
  }
  StateDict want_all = oracle().call("rnn_batch", {{"configs", configs}}, inputs);
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& k = cases[i];
    SCOPED_TRACE("config " + k.describe());
    const std::string prefix = std::to_string(i) + ".";
    StateDict want;
    for (const auto& [name, t] : want_all)
      if (name.compare(0, prefix.size(), prefix) == 0) want.insert(name.substr(prefix.size()), t);
    for (const auto& [name, t] : want) {
      const Tensor* got = k.got.find(name);
      if (!got) {
        ADD_FAILURE() << k.label << ": PyTorch produced '" << name << "' but rnnkit did not";
        continue;
      }
      const bool grad = name.compare(0, 5, "grad_") == 0;
      std::string what = k.label + " " + (grad ? (name.compare(0, 7, "grad_w.") == 0 ? "grad_weights" : name) : name);
      EXPECT_CLOSE(*got, t, grad ? tol_backward : tol_forward, what + "[" + name + "]");
    }
    for (const auto& [name, t] : k.got) {
      if (want.contains(name)) continue;
      // PyTorch leaves a gradient None where it is identically zero.
      EXPECT_EQ(t.abs().max().item(), 0.0) << k.label << ": rnnkit produced a nonzero '" << name
                                            << "' that PyTorch does not have";
    }
  }
}

}  // namespace rnnkit::testing::rnn
