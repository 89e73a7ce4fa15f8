// nn::RNN / LSTM / GRU and the cells as modules: printing (exact strings and
// live against PyTorch's repr), parameter names, order and counts, the
// initialisation, dropout (rate, scale, placement, reproducibility, eval),
// the autograd graph (one node per call), the inference path, shapes, and
// the errors for bad options and bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <sstream>
#include <thread>

#include "nn/nn_test_util.h"
#include "nn/rnn_parity_cases.h"
#include "kernels/cpu/bfloat16.h"
#include "kernels/cpu/rnn_simd.h"
#include "nn/rnn_function.h"
#include "rnnkit/optim/sgd.h"
#include "rnnkit/threading.h"
#include "support/gradcheck.h"

namespace {

using namespace rnnkit;
namespace nn = rnnkit::nn;
namespace simd = rnnkit::kernels::cpu::simd;
using nlohmann::json;
using rnnkit::testing::oracle;

template <class M>
std::string repr(const M& module) {
  std::ostringstream os;
  os << *module;
  return os.str();
}

std::string bytes_to_string(const Tensor& t) {
  std::string s;
  for (int64_t v : t.to_vector<int64_t>()) s += static_cast<char>(v);
  return s;
}

// ------------------------------------------------------------------ printing

TEST(RnnModules, PrintsLikePyTorch) {
  EXPECT_EQ(repr(nn::LSTM(nn::LSTMOptions(10, 20).num_layers(2).batch_first(true).bidirectional(true))),
            "LSTM(10, 20, num_layers=2, batch_first=True, bidirectional=True)");
  EXPECT_EQ(repr(nn::LSTM(10, 20)), "LSTM(10, 20)");
  EXPECT_EQ(repr(nn::LSTM(nn::LSTMOptions(10, 20).proj_size(5).num_layers(2).bias(false).dropout(0.1))),
            "LSTM(10, 20, proj_size=5, num_layers=2, bias=False, dropout=0.1)");
  EXPECT_EQ(repr(nn::GRU(nn::GRUOptions(3, 4).dropout(1))), "GRU(3, 4, dropout=1.0)");
  EXPECT_EQ(repr(nn::GRU(nn::GRUOptions(3, 4).dropout(1e-5))), "GRU(3, 4, dropout=1e-05)");
  // PyTorch's RNN repr does not show the nonlinearity; its RNNCell repr does.
  EXPECT_EQ(repr(nn::RNN(nn::RNNOptions(10, 20).nonlinearity("relu"))), "RNN(10, 20)");
  EXPECT_EQ(repr(nn::LSTMCell(10, 20)), "LSTMCell(10, 20)");
  EXPECT_EQ(repr(nn::GRUCell(nn::GRUCellOptions(10, 20).bias(false))), "GRUCell(10, 20, bias=False)");
  EXPECT_EQ(repr(nn::RNNCell(nn::RNNCellOptions(10, 20).nonlinearity("relu"))), "RNNCell(10, 20, nonlinearity=relu)");
  EXPECT_EQ(repr(nn::RNNCell(nn::RNNCellOptions(10, 20).nonlinearity("relu").bias(false))),
            "RNNCell(10, 20, bias=False, nonlinearity=relu)");
}

// repr(), parameter names in order, and counts, against PyTorch for random options.
TEST(RnnModules, ReprNamesAndCountsMatchPyTorch) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const char* kinds[] = {"RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"};
  json configs = json::array();
  std::vector<std::shared_ptr<nn::Module>> modules;
  const double dropouts[] = {0.0, 0.0, 0.25, 0.5, 1.0, 1e-5, 0.1, 0.3};
  for (int i = 0; i < 120; ++i) {
    json c = rnnkit::testing::rnn::random_config(kinds[i % 6], rng);
    if (c.contains("dropout")) c["dropout"] = dropouts[rnnkit::testing::rnn::pick(rng, 0, 7)];
    c["num_layers"] = c.value("num_layers", 1);
    modules.push_back(rnnkit::testing::rnn::build_model(c, nullptr).module);
    configs.push_back(c);
  }
  StateDict want = oracle().call("rnn_repr", {{"configs", configs}}, {});
  for (size_t i = 0; i < modules.size(); ++i) {
    SCOPED_TRACE(configs[i].dump());
    const std::string p = std::to_string(i) + ".";
    std::ostringstream os;
    os << *modules[i];
    EXPECT_EQ(os.str(), bytes_to_string(want.at(p + "repr")));
    std::string names;
    for (const auto& [name, t] : modules[i]->named_parameters()) names += (names.empty() ? "" : ",") + name;
    EXPECT_EQ(names, bytes_to_string(want.at(p + "names")));
    const std::vector<int64_t> count = want.at(p + "count").to_vector<int64_t>();
    EXPECT_EQ(modules[i]->parameter_count(), count[0]);
    EXPECT_EQ(static_cast<int64_t>(modules[i]->parameters().size()), count[1]);
  }
}

// ------------------------------------------------------------------ parameters

TEST(RnnModules, ParameterCountsOfTheClassicModels) {
  const int64_t linear = 128 * 10 + 10;  // nn.Linear(128, 10)
  EXPECT_EQ(nn::RNN(50, 128)->parameter_count() + linear, 24330);
  EXPECT_EQ(nn::LSTM(50, 128)->parameter_count() + linear, 93450);
  EXPECT_EQ(nn::GRU(50, 128)->parameter_count() + linear, 70410);
  EXPECT_EQ(nn::RNN(nn::RNNOptions(50, 128).bidirectional(true))->parameter_count() + 256 * 10 + 10, 48650);
  EXPECT_EQ(nn::RNN(50, 128)->parameters().size(), 4u);
  EXPECT_EQ(nn::LSTM(nn::LSTMOptions(50, 128).num_layers(2).bidirectional(true))->parameters().size(), 16u);
}

TEST(RnnModules, ParameterNamesShapesAndOrder) {
  nn::LSTM lstm(nn::LSTMOptions(3, 8).num_layers(2).bidirectional(true).proj_size(5));
  const std::vector<std::pair<std::string, Shape>> want = {
      {"weight_ih_l0", {32, 3}},          {"weight_hh_l0", {32, 5}},          {"bias_ih_l0", {32}},
      {"bias_hh_l0", {32}},               {"weight_hr_l0", {5, 8}},           {"weight_ih_l0_reverse", {32, 3}},
      {"weight_hh_l0_reverse", {32, 5}},  {"bias_ih_l0_reverse", {32}},       {"bias_hh_l0_reverse", {32}},
      {"weight_hr_l0_reverse", {5, 8}},   {"weight_ih_l1", {32, 10}},         {"weight_hh_l1", {32, 5}},
      {"bias_ih_l1", {32}},               {"bias_hh_l1", {32}},               {"weight_hr_l1", {5, 8}},
      {"weight_ih_l1_reverse", {32, 10}}, {"weight_hh_l1_reverse", {32, 5}},  {"bias_ih_l1_reverse", {32}},
      {"bias_hh_l1_reverse", {32}},       {"weight_hr_l1_reverse", {5, 8}}};
  const auto got = lstm->named_parameters();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(got[i].second.sizes(), want[i].second) << want[i].first;
  }
  EXPECT_EQ(lstm->all_weights().size(), 4u);
  EXPECT_EQ(lstm->state_dict().keys().front(), "weight_ih_l0");
  nn::GRUCell cell(nn::GRUCellOptions(4, 6).bias(false));
  ASSERT_EQ(cell->named_parameters().size(), 2u);
  EXPECT_EQ(cell->named_parameters()[1].first, "weight_hh");
  EXPECT_EQ(cell->named_parameters()[1].second.sizes(), (Shape{18, 6}));
}

TEST(RnnModules, InitialisationIsUniformAndSeeded) {
  Generator a(123), b(123), c(124);
  nn::GRU g1(nn::GRUOptions(20, 64).generator(&a)), g2(nn::GRUOptions(20, 64).generator(&b)),
      g3(nn::GRUOptions(20, 64).generator(&c));
  const double bound = 1.0 / std::sqrt(64.0);
  double sum = 0, sum_sq = 0;
  int64_t n = 0;
  for (size_t i = 0; i < g1->parameters().size(); ++i) {
    const Tensor p = g1->parameters()[i];
    EXPECT_TRUE(equal(p, g2->parameters()[i]));
    EXPECT_FALSE(equal(p, g3->parameters()[i]));
    for (double v : p.to_vector<double>()) {
      EXPECT_LE(std::abs(v), bound);
      sum += v;
      sum_sq += v * v;
      ++n;
    }
  }
  const double mean = sum / n, var = sum_sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 4 * bound / std::sqrt(3.0 * n));
  EXPECT_NEAR(var, bound * bound / 3, 0.02 * bound * bound);
  // The default generator follows manual_seed.
  manual_seed(7);
  nn::LSTM l1(5, 6);
  manual_seed(7);
  nn::LSTM l2(5, 6);
  EXPECT_TRUE(equal(l1->parameters()[0], l2->parameters()[0]));
}

// ------------------------------------------------------------------ graph and shapes

TEST(RnnModules, OneAutogradNodePerCall) {
  nn::LSTM lstm(nn::LSTMOptions(4, 6).num_layers(3).bidirectional(true).batch_first(true));
  Tensor x = randn({2, 5, 4}).requires_grad_();
  Tensor h0 = randn({6, 2, 6}).requires_grad_(), c0 = randn({6, 2, 6}).requires_grad_();
  auto [out, h_n, c_n] = lstm->forward(x, {h0, c0});
  ASSERT_TRUE(out.grad_fn());
  EXPECT_EQ(out.grad_fn()->name(), "LSTMBackward");
  EXPECT_EQ(out.grad_fn(), h_n.grad_fn());
  EXPECT_EQ(out.grad_fn(), c_n.grad_fn());
  EXPECT_EQ(h_n.output_nr(), 1u);
  EXPECT_EQ(c_n.output_nr(), 2u);
  // Every input edge leads straight to a leaf: no intermediate nodes.
  const auto& edges = out.grad_fn()->next_edges;
  ASSERT_EQ(edges.size(), 3 + lstm->parameters().size());
  for (const auto& e : edges) {
    ASSERT_TRUE(e.valid());
    EXPECT_EQ(e.fn->name(), "AccumulateGrad");
  }
  nn::GRUCell cell(4, 6);
  Tensor h = cell->forward(randn({3, 4}).requires_grad_());
  EXPECT_EQ(h.grad_fn()->name(), "GRUCellBackward");
  for (const auto& e : h.grad_fn()->next_edges)
    if (e.valid()) EXPECT_EQ(e.fn->name(), "AccumulateGrad");
  // No graph without grad mode.
  NoGradGuard guard;
  EXPECT_FALSE(lstm->forward(x, {h0, c0}).output.grad_fn());
}

TEST(RnnModules, ShapesOfEveryMode) {
  nn::LSTM lstm(nn::LSTMOptions(4, 6).num_layers(2).bidirectional(true).proj_size(3));
  auto [o1, h1, c1] = lstm->forward(randn({7, 2, 4}));
  EXPECT_EQ(o1.sizes(), (Shape{7, 2, 6}));
  EXPECT_EQ(h1.sizes(), (Shape{4, 2, 3}));
  EXPECT_EQ(c1.sizes(), (Shape{4, 2, 6}));
  auto [o2, h2, c2] = lstm->forward(randn({7, 4}));  // unbatched
  EXPECT_EQ(o2.sizes(), (Shape{7, 6}));
  EXPECT_EQ(h2.sizes(), (Shape{4, 3}));
  EXPECT_EQ(c2.sizes(), (Shape{4, 6}));
  nn::GRU gru(nn::GRUOptions(4, 5).batch_first(true));
  auto [o3, h3, c3] = gru->forward(randn({2, 7, 4}));
  EXPECT_EQ(o3.sizes(), (Shape{2, 7, 5}));
  EXPECT_EQ(h3.sizes(), (Shape{1, 2, 5}));
  EXPECT_FALSE(c3.defined());
  auto o4 = gru->forward(randn({7, 4}), randn({1, 5})).output;  // unbatched ignores batch_first
  EXPECT_EQ(o4.sizes(), (Shape{7, 5}));
  nn::LSTMCell cell(4, 5);
  auto [h5, c5] = cell->forward(randn({4}));
  EXPECT_EQ(h5.sizes(), (Shape{5}));
  EXPECT_EQ(c5.sizes(), (Shape{5}));
  // A cell's state carries over.
  nn::LSTMState state = cell->forward(randn({3, 4}));
  state = cell->forward(randn({3, 4}), state);
  EXPECT_EQ(state.h.sizes(), (Shape{3, 5}));
  EXPECT_EQ(state.c.sizes(), (Shape{3, 5}));
}

// Inputs with any strides, and gradients that arrive expanded (from sum()).
TEST(RnnModules, StridedInputsAndExpandedGradients) {
  Generator gen(8);
  nn::GRU gru(nn::GRUOptions(3, 5).num_layers(2).batch_first(true).bidirectional(true).generator(&gen));
  Tensor base = randn({4, 2, 3}, {}, &gen);
  Tensor x = base.transpose(0, 1).requires_grad_();  // [2, 4, 3], not contiguous
  auto [out, h_n, c_n] = gru->forward(x);
  EXPECT_EQ(out.sizes(), (Shape{2, 4, 10}));
  add(sum(out), sum(h_n)).backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().sizes(), (Shape{2, 4, 3}));
  // Same as with a contiguous copy and explicit ones as the gradients.
  Tensor x2 = x.detach().contiguous().requires_grad_();
  auto r2 = gru->forward(x2);
  EXPECT_TRUE(allclose(r2.output, out, 0, 0));
  r2.output.backward(ones({2, 4, 10}), true);
  r2.h_n.backward(ones({4, 2, 5}));
  EXPECT_TRUE(allclose(x2.grad(), x.grad(), 1e-6, 1e-6));
}

// The inference path (no graph: two alternating layer buffers, the output
// written in place) computes what the training path computes.
TEST(RnnModules, InferencePathMatchesTrainingPath) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 60; ++i) {
    const char* kinds[] = {"RNN", "LSTM", "GRU"};
    json c = rnnkit::testing::rnn::random_config(kinds[i % 3], rng);
    c["dropout"] = 0.3;  // training mode: the masks must be the same on both paths
    SCOPED_TRACE(c.dump());
    Generator gen(rng());
    auto m = rnnkit::testing::rnn::build_model(c, &gen);
    const int64_t T = c["steps"], N = c["batch"], I = c["input_size"];
    const bool bf = c["batch_first"].get<bool>() && !c["unbatched"].get<bool>();
    Tensor x = randn(c["unbatched"].get<bool>() ? Shape{T, I} : bf ? Shape{N, T, I} : Shape{T, N, I});
    gen.manual_seed(99);
    nn::RNNOutput train;
    {
      Tensor xg = x.detach().clone().requires_grad_();
      train = m.forward(xg, Tensor(), Tensor());
    }
    gen.manual_seed(99);
    nn::RNNOutput infer;
    {
      NoGradGuard guard;
      infer = m.forward(x, Tensor(), Tensor());
    }
    EXPECT_TRUE(equal(train.output.detach(), infer.output));
    EXPECT_TRUE(equal(train.h_n.detach(), infer.h_n));
    if (train.c_n.defined()) EXPECT_TRUE(equal(train.c_n.detach(), infer.c_n));
  }
}

// ------------------------------------------------------------------ dropout

// A 2-layer Elman RNN whose second layer is tanh(x) (W_ih = I, W_hh = 0, no
// bias): its output shows the dropout mask applied to the first layer's output.
nn::RNN probe_rnn(int64_t H, double p, Generator* gen) {
  nn::RNN rnn(nn::RNNOptions(4, H).num_layers(2).dropout(p).bias(false).generator(gen));
  rnn->to(kFloat64);
  NoGradGuard guard;
  for (auto& [name, w] : rnn->named_parameters()) {
    if (name == "weight_ih_l1") {
      w.zero_();
      for (int64_t j = 0; j < H; ++j) w[j][j].fill_(1.0);
    } else if (name == "weight_hh_l1") {
      w.zero_();
    }
  }
  return rnn;
}

TEST(RnnModules, DropoutRateScaleAndPlacement) {
  const double p = 0.3;
  const int64_t H = 32;
  Generator gen(2024);
  nn::RNN rnn = probe_rnn(H, p, &gen);
  Tensor x = randn({50, 8, 4}, kFloat64, &gen);
  rnn->train();
  auto train = rnn->forward(x);
  rnn->eval();
  auto eval = rnn->forward(x);
  const std::vector<double> yt = train.output.to_vector<double>(), ye = eval.output.to_vector<double>();
  int64_t zeros = 0;
  double worst_scale = 0;
  for (size_t i = 0; i < yt.size(); ++i) {
    if (yt[i] == 0.0) {
      ++zeros;
      continue;
    }
    // tanh(y0 / (1 - p)) where eval gives tanh(y0).
    worst_scale = std::max(worst_scale, std::abs(std::atanh(yt[i]) * (1 - p) - std::atanh(ye[i])));
  }
  const double rate = static_cast<double>(zeros) / yt.size();
  EXPECT_NEAR(rate, p, 0.02) << "fraction of zeroed elements";
  EXPECT_LT(worst_scale, 1e-9) << "kept elements are scaled by 1/(1-p)";
  // The last layer's output is not dropped (else the rate would be 1-(1-p)^2),
  // and the states are the layers' own: layer 0's h_n is untouched.
  EXPECT_TRUE(allclose(train.h_n[0], eval.h_n[0], 0, 0));
  // Eval mode is deterministic and equals the model without dropout.
  EXPECT_TRUE(equal(rnn->forward(x).output, eval.output));
  nn::RNN no_dropout(nn::RNNOptions(4, H).num_layers(2).bias(false));
  no_dropout->to(kFloat64);
  no_dropout->load_state_dict(rnn->state_dict());
  EXPECT_TRUE(allclose(no_dropout->forward(x).output, eval.output, 0, 0));
}

TEST(RnnModules, DropoutIsReproducibleForASeed) {
  Generator gen(5);
  nn::LSTM lstm(nn::LSTMOptions(3, 8).num_layers(3).dropout(0.5).bidirectional(true).generator(&gen));
  Tensor x = randn({6, 4, 3});
  gen.manual_seed(77);
  Tensor a = lstm->forward(x).output;
  gen.manual_seed(77);
  Tensor b = lstm->forward(x).output;
  Tensor c = lstm->forward(x).output;  // the stream has moved on: other masks
  EXPECT_TRUE(equal(a, b));
  EXPECT_FALSE(equal(a, c));
  // Through the default generator as well.
  nn::GRU gru(nn::GRUOptions(3, 8).num_layers(2).dropout(0.5));
  manual_seed(3);
  Tensor d = gru->forward(x).output;
  manual_seed(3);
  EXPECT_TRUE(equal(d, gru->forward(x).output));
  // One layer: dropout has nothing to act on (PyTorch only warns).
  nn::GRU single(nn::GRUOptions(3, 8).dropout(0.5));
  Tensor s1 = single->forward(x).output;
  single->eval();
  EXPECT_TRUE(equal(s1, single->forward(x).output));
}

// Gradients through the dropout masks (masks fixed by re-seeding), by finite
// differences in float64; f runs without grad for the differences, so this
// also ties the inference path to the training path.
TEST(RnnModules, GradientsThroughDropoutByFiniteDifferences) {
  Generator gen(17);
  nn::LSTM lstm(nn::LSTMOptions(3, 4).num_layers(2).dropout(0.4).bidirectional(true).proj_size(2).generator(&gen));
  lstm->to(kFloat64);
  Tensor x = randn({4, 2, 3}, kFloat64, &gen).requires_grad_();
  Tensor h0 = randn({4, 2, 2}, kFloat64, &gen).requires_grad_();
  Tensor c0 = randn({4, 2, 4}, kFloat64, &gen).requires_grad_();
  Tensor r1 = randn({4, 2, 4}, kFloat64, &gen), r2 = randn({4, 2, 2}, kFloat64, &gen);
  std::vector<Tensor> inputs = {x, h0, c0};
  for (const Tensor& p : lstm->parameters()) inputs.push_back(p);
  auto f = [&](const std::vector<Tensor>& in) {
    gen.manual_seed(1234);
    auto [out, h_n, c_n] = lstm->forward(in[0], {in[1], in[2]});
    return add(sum(mul(out, r1)), add(sum(mul(h_n, r2)), sum(c_n)));
  };
  EXPECT_TRUE(rnnkit::testing::gradcheck(f, inputs, 1e-6, 1e-6));

  // The same on a packed batch with unsorted lengths (masks over packed rows).
  nn::GRU gru(nn::GRUOptions(3, 3).num_layers(2).dropout(0.3).bidirectional(true).generator(&gen));
  gru->to(kFloat64);
  Tensor xp = randn({4, 3, 3}, kFloat64, &gen).requires_grad_();
  Tensor hp = randn({4, 3, 3}, kFloat64, &gen).requires_grad_();
  Tensor rp = randn({4, 3, 6}, kFloat64, &gen);
  std::vector<Tensor> packed_inputs = {xp, hp};
  for (const Tensor& p : gru->parameters()) packed_inputs.push_back(p);
  auto g = [&](const std::vector<Tensor>& in) {
    gen.manual_seed(99);
    auto packed = nn::utils::rnn::pack_padded_sequence(in[0], std::vector<int64_t>{2, 4, 1}, false, false);
    auto [out, h_n, unused] = gru->forward(packed, in[1]);
    Tensor padded = nn::utils::rnn::pad_packed_sequence(out, false, 0.0, 4).padded;
    return add(sum(mul(padded, rp)), sum(mul(h_n, h_n)));
  };
  EXPECT_TRUE(rnnkit::testing::gradcheck(g, packed_inputs, 1e-6, 1e-6));
}

// ------------------------------------------------------------------ packed weights kept

// Which packed form of a weight: W_hh, W_ih, W_hh in bfloat16 (a module in
// set_bf16_inference), W_hr.
enum class Packed { kRecurrent, kInput, kBf16, kProjection };

// Whether the kernel call of one layer of these sizes (a padded batch,
// projection P) takes that packed form.
bool takes_packed(kernels::cpu::CellType cell, int64_t I, int64_t H, int64_t N, int64_t T,
                  Packed what = Packed::kRecurrent, int64_t P = 0) {
  namespace kc = kernels::cpu;
  kc::RnnLayerDims dims;
  dims.cell = cell;
  dims.input_size = I;
  dims.hidden_size = H;
  dims.proj_size = P;
  dims.batch = N;
  dims.steps = T;
  const std::vector<int64_t> batch_sizes(static_cast<size_t>(T), N);
  dims.batch_sizes = batch_sizes.data();
  switch (what) {
    case Packed::kRecurrent: return kc::rnn_forward_takes_packed(dims);
    case Packed::kInput: return kc::rnn_packed_input_weights_size(dims) > 0;
    case Packed::kBf16:
      return kc::rnn_forward_takes_packed(dims) &&
             kc::rnn_packed_weights_size(dims, kc::PackedPrecision::kBFloat16) > 0;
    case Packed::kProjection: return kc::rnn_packed_projection_weights_size(dims) > 0;
  }
  return false;
}

// A layer or cell config as rnn_parity_cases.h builds it (bias, no dropout,
// time-major, no projection).
json layer_config(const char* kind, int64_t I, int64_t H, int64_t L, int64_t N, int64_t T, bool bidirectional,
                  const char* nonlinearity = "relu") {
  return json{{"kind", kind},   {"input_size", I},         {"hidden_size", H},   {"num_layers", L},
              {"batch", N},     {"steps", T},              {"bias", true},       {"batch_first", false},
              {"dropout", 0.0}, {"bidirectional", bidirectional}, {"proj_size", 0}, {"nonlinearity", nonlinearity}};
}

// c with an LSTM projection of P outputs.
json with_projection(json c, int64_t P) {
  c["proj_size"] = P;
  return c;
}

// Every instruction set this CPU has, scalar included.
std::vector<simd::Isa> available_isas() {
  std::vector<simd::Isa> isas;
  for (simd::Isa isa : {simd::Isa::kAvx512, simd::Isa::kAvx2, simd::Isa::kScalar})
    if (isa <= simd::detected_isa()) isas.push_back(isa);
  return isas;
}

// How many weights one call of a layer config (rnn_parity_cases.h's json)
// packs: W_hh in every kernel call (layers x directions), or in none, as layer
// 0's kernel dims decide (the later layers differ only in input size); with
// input, the W_ih its kernel calls take packed (layer l > 0 reads D * H inputs).
kernels::cpu::CellType cell_type(const json& c) {
  const std::string kind = c["kind"];
  using kernels::cpu::CellType;
  return kind.rfind("LSTM", 0) == 0    ? CellType::LSTM
         : kind.rfind("GRU", 0) == 0   ? CellType::GRU
         : c["nonlinearity"] == "relu" ? CellType::RNN_RELU
                                       : CellType::RNN_TANH;
}

int64_t packed_calls(const json& c, bool input = false) {
  const kernels::cpu::CellType cell = cell_type(c);
  const int64_t D = c["bidirectional"].get<bool>() ? 2 : 1, L = c["num_layers"], H = c["hidden_size"];
  const int64_t P = c.value("proj_size", 0), Hout = P > 0 ? P : H, N = c["batch"], T = c["steps"];
  const int64_t I = c["input_size"];
  if (!input)  // W_hh, and W_hr where the call takes it packed
    return (takes_packed(cell, I, H, N, T, Packed::kRecurrent, P) ? L * D : 0) +
           (takes_packed(cell, I, H, N, T, Packed::kProjection, P) ? L * D : 0);
  int64_t calls = 0;
  for (int64_t l = 0; l < L; ++l)
    if (takes_packed(cell, l == 0 ? I : D * Hout, H, N, T, Packed::kInput, P)) calls += D;
  return calls;
}

// Both: the packings one call makes.
int64_t packings(const json& c) { return packed_calls(c) + packed_calls(c, true); }

// fn(isa, c) for every instruction set this CPU has (made active; without AVX2
// the small-batch forward takes no packed weights, and nothing is kept) and
// every config, traced; the active instruction set is restored after.
template <class Fn>
void for_each_isa_and_config(const std::vector<json>& configs, Fn&& fn) {
  const simd::Isa saved_isa = simd::active_isa();
  for (simd::Isa isa : available_isas())
    for (const json& c : configs) {
      simd::set_active_isa(isa);
      SCOPED_TRACE(std::string(simd::isa_name(isa)) + " " + c.dump());
      fn(isa, c);
    }
  simd::set_active_isa(saved_isa);
}

const nn::detail::PackedWeightsCache& packed_cache_of(const nn::Module& m) {
  if (auto* layer = dynamic_cast<const nn::RNNImplBase*>(&m)) return layer->packed_weights_cache();
  return dynamic_cast<const nn::RNNCellImplBase&>(m).packed_weights_cache();
}

// Layers and cells whose calls take the paths the packed-weights cache serves.
std::vector<json> cache_configs() {
  return {
      layer_config("LSTM", 24, 64, 2, 1, 40, false),  // small batch, stacked: the wavefront
      layer_config("GRU", 16, 48, 1, 3, 7, true),     // small batch, directions at once
      layer_config("RNN", 20, 96, 1, 40, 5, false),   // large batch: the packed GEMM or lanes path
      layer_config("LSTM", 8, 40, 2, 12, 6, true),    // medium batch, stacked and bidirectional
      layer_config("LSTMCell", 12, 32, 1, 2, 1, false),
      layer_config("GRUCell", 12, 32, 1, 1, 1, false),
  };
}

// Inference calls keep W_hh packed between them, and every way of changing
// the weights reaches the next call: the result is always what a new module
// with the same weights computes (which packs them afresh), bit for bit.
TEST(RnnModules, InferenceKeepsPackedWeightsUntilTheyChange) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<json> configs = cache_configs();
  for (json c : {layer_config("RNNCell", 12, 32, 1, 20, 1, false),
                 with_projection(layer_config("LSTM", 16, 48, 2, 3, 5, true), 20),  // W_hr kept packed too
                 // Large layers on the small-batch path, which takes W_ih packed too (vector kernels).
                 layer_config("LSTM", 512, 512, 1, 1, 5, false), layer_config("GRUCell", 520, 512, 1, 2, 1, false)})
    configs.push_back(c);
  for_each_isa_and_config(configs, [&](simd::Isa isa, const json& c) {
    const std::string kind = c["kind"];
    const bool cell = rnnkit::testing::rnn::is_cell(kind);
    const int64_t I = c["input_size"], H = c["hidden_size"], N = c["batch"], T = c["steps"];
    const int64_t expected = packings(c);
    EXPECT_TRUE(expected > 0 || isa == simd::Isa::kScalar);
    Generator gen(rng());
    auto m = rnnkit::testing::rnn::build_model(c, &gen);
    m.module->eval();
    const Tensor x = randn(cell ? Shape{N, I} : Shape{T, N, I}, {}, &gen);
    // A cell's output depends on W_hh only through a state.
    const Tensor h = cell ? randn({N, H}, {}, &gen) : Tensor();
    const Tensor cs = kind == "LSTMCell" ? randn({N, H}, {}, &gen) : Tensor();
    auto packs = [&] { return packed_cache_of(*m.module).packs(); };
    auto run = [&] {
      NoGradGuard guard;
      return m.forward(x, h, cs).output;
    };
    auto fresh = [&] {
      Generator other(1);
      auto f = rnnkit::testing::rnn::build_model(c, &other);
      f.module->eval();
      f.module->load_state_dict(m.module->state_dict());
      NoGradGuard guard;
      return f.forward(x, h, cs).output;
    };
    Tensor w_hh, w_ih;
    for (auto& [name, p] : m.module->named_parameters()) {
      if (name == "weight_hh" || name == "weight_hh_l0") w_hh = p;
      if (name == "weight_ih" || name == "weight_ih_l0") w_ih = p;
    }
    ASSERT_TRUE(w_hh.defined() && w_ih.defined());

    Tensor y = run();
    EXPECT_EQ(packs(), expected);
    EXPECT_TRUE(equal(run(), y));
    EXPECT_TRUE(equal(run(), y));
    EXPECT_EQ(packs(), expected);
    EXPECT_TRUE(equal(y, fresh()));

    // After a change: packed afresh, a different result, the new weights'
    // result, and kept again.
    // repacks: whether the change is to a weight the call takes packed.
    auto expect_seen = [&](const char* route, bool repacks = true) {
      SCOPED_TRACE(route);
      const int64_t before = packs();
      const Tensor y2 = run();
      if (expected > 0 && repacks)
        EXPECT_GT(packs(), before);
      else
        EXPECT_EQ(packs(), before);
      EXPECT_FALSE(equal(y2, y));
      EXPECT_TRUE(equal(y2, fresh()));
      const int64_t after = packs();
      EXPECT_TRUE(equal(run(), y2));
      EXPECT_EQ(packs(), after);
      y = y2;
    };

    {  // A training step leaves the kept packing as it is: a one-step call (the
       // cells) reuses it, a longer one packs for itself.
      optim::SGD sgd(m.module->parameters(), optim::SGDOptions(0.5));
      const int64_t before = packs();
      const Tensor xg = x.detach().clone().requires_grad_();
      m.forward(xg, h, cs).output.pow(2).sum().backward();
      EXPECT_EQ(packs(), before);
      sgd.step();
    }
    expect_seen("an optimizer step");
    {
      NoGradGuard guard;
      w_hh.narrow(0, 0, w_hh.size(0) / 2).mul_(0.5);  // through a view
    }
    expect_seen("an in-place op on a view");
    {
      float* p = w_hh.data_ptr<float>();
      for (int64_t i = 0; i < w_hh.numel(); i += 3) p[i] += 0.25f;
    }
    expect_seen("a write through data_ptr");
    {
      Generator other(rng());
      auto donor = rnnkit::testing::rnn::build_model(c, &other);
      m.module->load_state_dict(donor.module->state_dict());
    }
    expect_seen("load_state_dict");
    nn::init::uniform_(w_hh, -0.4, 0.4, &gen);
    expect_seen("nn::init");
    w_hh.set_data(randn(w_hh.sizes(), {}, &gen) * 0.2);
    expect_seen("set_data");
    if (packed_calls(c, true) > 0) {  // kept packed W_ih: its changes are seen too
      {
        NoGradGuard guard;
        w_ih.narrow(0, 0, w_ih.size(0) / 2).mul_(0.5);
      }
      expect_seen("an in-place op on a view of W_ih");
      nn::init::uniform_(w_ih, -0.05, 0.05, &gen);
      expect_seen("nn::init on W_ih");
    }
    if (c.value("proj_size", 0) > 0) {  // kept packed W_hr: its changes are seen too
      Tensor w_hr;
      for (auto& [name, p] : m.module->named_parameters())
        if (name == "weight_hr_l0") w_hr = p;
      ASSERT_TRUE(w_hr.defined());
      {
        NoGradGuard guard;
        w_hr.mul_(0.5);
      }
      expect_seen("an in-place op on W_hr", packed_calls(c) > 0 &&
                                                takes_packed(cell_type(c), I, H, N, T, Packed::kProjection,
                                                             c["proj_size"].get<int64_t>()));
    }

    // Another thread count: packed for it where the layout depends on it.
    const int threads = get_num_threads();
    set_num_threads(1);
    const Tensor one = run();
    EXPECT_TRUE(equal(one, fresh()));
    set_num_threads(threads);
    EXPECT_TRUE(equal(run(), fresh()));

    // Calls from two threads at once share the kept weights.
    const Tensor want = run();
    bool same[2] = {true, true};
    std::vector<std::thread> callers;
    for (int t = 0; t < 2; ++t)
      callers.emplace_back([&, t] {
        for (int i = 0; i < 10; ++i) same[t] = same[t] && equal(run(), want);
      });
    for (auto& th : callers) th.join();
    EXPECT_TRUE(same[0] && same[1]);
  });
}

// A tensor with every value rounded to bfloat16 (kernels::cpu::round_to_bfloat16).
Tensor bf16_rounded(const Tensor& t) {
  std::vector<float> v = t.to_vector<float>();
  for (float& e : v) e = kernels::cpu::round_to_bfloat16(e);
  return from_vector(v, t.sizes());
}

// set_bf16_inference: inference calls run on every W_hh rounded to bfloat16,
// on every instruction set: what a module whose weight_hh_l* hold the rounded
// values computes (to float rounding; live PyTorch in RnnParity.Bf16Inference*),
// through the kernels' bfloat16 packing where the path has one; kept between
// calls, renewed when the weights change; calls that record a graph, and calls
// after switching it off, are the float module's bit for bit.
TEST(RnnModules, Bf16InferenceRunsOnRoundedRecurrentWeights) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<json> configs = cache_configs();
  configs.push_back(layer_config("LSTM", 16, 96, 1, 64, 3, false));  // large batch: the GEMM path, no bfloat16 form
  configs.push_back(with_projection(layer_config("LSTM", 16, 48, 2, 3, 5, false), 19));  // bfloat16 W_hh [4H, 19]
  int bf16_forms = 0;
  for_each_isa_and_config(configs, [&](simd::Isa isa, const json& c) {
    const std::string kind = c["kind"];
    const bool cell = rnnkit::testing::rnn::is_cell(kind);
    const int64_t I = c["input_size"], H = c["hidden_size"], N = c["batch"], T = c["steps"];
    Generator gen(rng());
    auto m = rnnkit::testing::rnn::build_model(c, &gen);
    m.module->eval();
    const Tensor x = randn(cell ? Shape{N, I} : Shape{T, N, I}, {}, &gen);
    const int64_t P = c["proj_size"], LD = c["num_layers"].get<int64_t>() * (c["bidirectional"] ? 2 : 1);
    const Tensor h = randn(cell ? Shape{N, H} : Shape{LD, N, P > 0 ? P : H}, {}, &gen);
    const Tensor cs = kind.rfind("LSTM", 0) == 0 ? randn(cell ? Shape{N, H} : Shape{LD, N, H}, {}, &gen) : Tensor();
    auto run = [&](rnnkit::testing::rnn::Model& model) {
      NoGradGuard guard;
      return model.forward(x, h, cs).output;
    };
    // A float module with m's weights, weight_hh_l* rounded when asked.
    auto copy = [&](bool rounded) {
      Generator other(1);
      auto f = rnnkit::testing::rnn::build_model(c, &other);
      f.module->eval();
      StateDict sd;
      for (const auto& [name, t] : m.module->state_dict())
        sd.insert(name, rounded && name.rfind("weight_hh", 0) == 0 ? bf16_rounded(t) : t);
      f.module->load_state_dict(sd);
      return f;
    };
    auto max_diff = [](const Tensor& a, const Tensor& b) { return sub(a, b).abs().max().item(); };
    const auto& cache = packed_cache_of(*m.module);

    const Tensor y_float = run(m);
    EXPECT_FALSE(m.module->named_parameters().empty());
    m.set_bf16_inference(true);
    const int64_t bf16_before = cache.bf16_packs();
    Tensor y = run(m);
    {
      auto r = copy(true);
      EXPECT_LE(max_diff(y, run(r)), 2e-6);
    }
    EXPECT_GT(max_diff(y, y_float), 1e-5);  // the rounding shows
    EXPECT_LT(max_diff(y, y_float), 2e-2);
    // The bfloat16 packing where the kernel call takes packed weights and has
    // that form (not the scalar kernels, not the 40-row batch).
    const int64_t D = c["bidirectional"].get<bool>() ? 2 : 1, L = c["num_layers"];
    const bool bf16_form = takes_packed(cell_type(c), I, H, N, T, Packed::kBf16, P);
    EXPECT_EQ(cache.bf16_packs() - bf16_before, bf16_form ? L * D : 0);
    if (isa == simd::Isa::kScalar) EXPECT_FALSE(bf16_form);
    bf16_forms += bf16_form ? 1 : 0;

    // Kept: the same bits, nothing rounded or packed again.
    const int64_t packs = cache.packs();
    EXPECT_TRUE(equal(run(m), y));
    EXPECT_EQ(cache.packs(), packs);

    // A forward that records a graph ignores it.
    {
      auto f = copy(false);
      const Tensor xg = x.detach().clone().requires_grad_();
      EXPECT_TRUE(equal(m.forward(xg, h, cs).output, f.forward(xg, h, cs).output));
    }

    // A change of the weights is seen.
    Tensor w_hh;
    for (auto& [name, p] : m.module->named_parameters())
      if (name == "weight_hh" || name == "weight_hh_l0") w_hh = p;
    ASSERT_TRUE(w_hh.defined());
    {
      NoGradGuard guard;
      w_hh.mul_(0.75);
    }
    const Tensor y2 = run(m);
    EXPECT_FALSE(equal(y2, y));
    {
      auto r = copy(true);
      EXPECT_LE(max_diff(y2, run(r)), 2e-6);
    }

    // Switched off: the float module's result again.
    m.set_bf16_inference(false);
    auto f = copy(false);
    EXPECT_TRUE(equal(run(m), run(f)));
  });
  // Both kinds of call ran wherever the CPU has vector kernels.
  if (simd::detected_isa() != simd::Isa::kScalar) EXPECT_GE(bf16_forms, 6);
}

// The largest difference of a one-layer module's bfloat16-products forward
// (output y [T, N, D*Hout], h_n) from the equations on the rounded values, in
// double, each step of each direction computed from the module's own h of the
// step before (so that an h rounded the other way in an earlier step, after a
// last-bit difference, cannot carry). *gap: the largest difference from the
// same steps with h unrounded in the product (the rounding shows there).
double bf16_products_error(const json& c, const StateDict& sd, const Tensor& x, const Tensor& h0, const Tensor& c0,
                           const Tensor& y, const Tensor& h_n, double* gap) {
  const std::string kind = c["kind"];
  const int64_t I = c["input_size"], H = c["hidden_size"], N = c["batch"], T = c["steps"];
  const int64_t P = c["proj_size"], Hout = P > 0 ? P : H, D = c["bidirectional"].get<bool>() ? 2 : 1;
  const int64_t G = kind == "LSTM" ? 4 : kind == "GRU" ? 3 : 1;
  const bool relu = kind == "RNN" && c["nonlinearity"] == "relu";
  const auto vec = [](const Tensor& t) {
    const std::vector<float> v = t.to_vector<float>();
    return std::vector<double>(v.begin(), v.end());
  };
  const auto r = [](double v) { return static_cast<double>(kernels::cpu::round_to_bfloat16(static_cast<float>(v))); };
  const std::vector<double> xs = vec(x), ys = vec(y), hn = vec(h_n), h0s = vec(h0);
  const std::vector<double> c0s = c0.defined() ? vec(c0) : std::vector<double>();
  double worst = 0;
  *gap = 0;
  for (int64_t d = 0; d < D; ++d) {
    const std::string sfx = std::string("_l0") + (d == 1 ? "_reverse" : "");
    const std::vector<double> w_ih = vec(sd.at("weight_ih" + sfx)), w_hh = vec(sd.at("weight_hh" + sfx)),
                              b_ih = vec(sd.at("bias_ih" + sfx)), b_hh = vec(sd.at("bias_hh" + sfx));
    const std::vector<double> w_hr = P > 0 ? vec(sd.at("weight_hr" + sfx)) : std::vector<double>();
    for (int64_t b = 0; b < N; ++b) {
      std::vector<double> h(h0s.begin() + (d * N + b) * Hout, h0s.begin() + (d * N + b + 1) * Hout);
      std::vector<double> cell = G == 4 ? std::vector<double>(c0s.begin() + (d * N + b) * H,
                                                              c0s.begin() + (d * N + b + 1) * H)
                                        : std::vector<double>(H, 0.0);
      for (int64_t step = 0; step < T; ++step) {
        const int64_t t = d == 1 ? T - 1 - step : step;
        std::vector<double> gi(G * H), gh(G * H), gp(G * H);
        for (int64_t q = 0; q < G * H; ++q) {
          gi[q] = b_ih[q];
          gh[q] = gp[q] = b_hh[q];
          for (int64_t i = 0; i < I; ++i) gi[q] += r(w_ih[q * I + i]) * r(xs[(t * N + b) * I + i]);
          for (int64_t j = 0; j < Hout; ++j) {
            gh[q] += r(w_hh[q * Hout + j]) * r(h[j]);
            gp[q] += r(w_hh[q * Hout + j]) * h[j];
          }
        }
        // The step's output from the recurrent terms g (c advanced in cs).
        const auto out = [&](const std::vector<double>& g, std::vector<double> cs) {
          std::vector<double> m(H);
          for (int64_t j = 0; j < H; ++j) {
            if (G == 1) {
              const double a = gi[j] + g[j];
              m[j] = relu ? std::max(a, 0.0) : std::tanh(a);
            } else if (G == 3) {
              const double rr = 1 / (1 + std::exp(-(gi[j] + g[j]))), z = 1 / (1 + std::exp(-(gi[H + j] + g[H + j])));
              const double n = std::tanh(gi[2 * H + j] + rr * g[2 * H + j]);
              m[j] = (1 - z) * n + z * h[j];
            } else {
              const auto sg = [](double v) { return 1 / (1 + std::exp(-v)); };
              cs[j] = sg(gi[H + j] + g[H + j]) * cs[j] + sg(gi[j] + g[j]) * std::tanh(gi[2 * H + j] + g[2 * H + j]);
              m[j] = sg(gi[3 * H + j] + g[3 * H + j]) * std::tanh(cs[j]);
            }
          }
          if (P > 0) {
            std::vector<double> p(P, 0.0);
            for (int64_t q = 0; q < P; ++q)
              for (int64_t j = 0; j < H; ++j) p[q] += w_hr[q * H + j] * m[j];
            m = p;
          }
          return std::make_pair(m, cs);
        };
        const auto [want, cell_next] = out(gh, cell);
        const auto plain = out(gp, cell).first;
        const double* got = &ys[(t * N + b) * D * Hout + d * Hout];
        for (int64_t q = 0; q < Hout; ++q) {
          worst = std::max(worst, std::abs(got[q] - want[q]));
          *gap = std::max(*gap, std::abs(got[q] - plain[q]));
        }
        h.assign(got, got + Hout);  // the module's own h, as its next step takes it
        cell = cell_next;
      }
      for (int64_t q = 0; q < Hout; ++q) worst = std::max(worst, std::abs(hn[(d * N + b) * Hout + q] - h[q]));
    }
  }
  return worst;
}

// set_bf16_products over whole sequences, on every instruction set: each step
// of every direction matches the equations on the rounded values (x, the h
// entering the step, W_ih, W_hh; bf16_products_error), at small batches (the
// kernels' bfloat16 products, on the AVX512_BF16 dot instructions where the
// CPU has them), at large ones (the GEMM and lanes paths round x and h), with
// projections; a stacked module is the stack of its layers run one by one in
// the same mode (the wavefront, and directions at once); kept between calls
// (nothing rounded or packed again), a weight change seen, calls that record a
// graph and calls after switching it off the float module's bits.
TEST(RnnModules, Bf16ProductsFollowTheRoundedEquations) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<json> configs = {
      layer_config("LSTM", 24, 64, 1, 1, 12, false),  layer_config("GRU", 16, 48, 1, 3, 7, true),
      layer_config("RNN", 20, 96, 1, 4, 5, false, "tanh"), layer_config("RNN", 9, 33, 1, 2, 6, true),
      with_projection(layer_config("LSTM", 16, 48, 1, 3, 5, true), 19),
      layer_config("LSTM", 12, 40, 1, 40, 4, false),  // large batch: the GEMM path
      layer_config("GRU", 8, 72, 1, 48, 3, true),
      layer_config("LSTM", 24, 64, 3, 1, 40, false),  // stacked, small batch: the wavefront
      layer_config("GRU", 10, 40, 2, 5, 6, true),     // stacked, bidirectional
  };
  int checked = 0, gaps_seen = 0;
  for_each_isa_and_config(configs, [&](simd::Isa isa, const json& c) {
    const std::string kind = c["kind"];
    const int64_t I = c["input_size"], H = c["hidden_size"], N = c["batch"], T = c["steps"];
    const int64_t P = c["proj_size"], L = c["num_layers"], D = c["bidirectional"].get<bool>() ? 2 : 1;
    Generator gen(rng());
    auto m = rnnkit::testing::rnn::build_model(c, &gen);
    m.module->eval();
    const Tensor x = randn({T, N, I}, {}, &gen);
    const Tensor h = randn({L * D, N, P > 0 ? P : H}, {}, &gen);
    const Tensor cs = kind == "LSTM" ? randn({L * D, N, H}, {}, &gen) : Tensor();
    const auto run = [&](rnnkit::testing::rnn::Model& model, const Tensor& in, const Tensor& h0, const Tensor& c0) {
      NoGradGuard guard;
      return model.forward(in, h0, c0);
    };
    const auto copy = [&](const json& cfg, const StateDict& sd) {
      Generator other(1);
      auto f = rnnkit::testing::rnn::build_model(cfg, &other);
      f.module->eval();
      f.module->load_state_dict(sd);
      return f;
    };
    const StateDict sd = m.module->state_dict();
    const Tensor y_float = run(m, x, h, cs).output;
    m.set_bf16_products(true);
    const auto& cache = packed_cache_of(*m.module);
    const nn::RNNOutput got = run(m, x, h, cs);
    EXPECT_GT(sub(got.output, y_float).abs().max().item(), 1e-5);  // the rounding shows
    if (L == 1) {
      double gap = 0;
      EXPECT_LT(bf16_products_error(c, sd, x, h, cs, got.output, got.h_n, &gap), 2e-5);
      gaps_seen += gap > 5e-5 ? 1 : 0;
      ++checked;
    } else if (isa != simd::Isa::kScalar) {
      // Layer by layer, each a one-layer module in the same mode fed the one
      // below's output: the same bits. (Not with the scalar kernels, whose
      // GEMMs may sum a stacked call's layers in another order than one-layer
      // calls', after which an h value at a rounding boundary may round apart.)
      Tensor in = x;
      for (int64_t l = 0; l < L; ++l) {
        json one = c;
        one["num_layers"] = 1;
        one["input_size"] = l == 0 ? I : D * H;
        StateDict layer_sd;
        for (const auto& [name, t] : sd) {
          const std::string tag = "_l" + std::to_string(l);
          const size_t at = name.find(tag);
          if (at != std::string::npos && (at + tag.size() == name.size() || name[at + tag.size()] == '_'))
            layer_sd.insert(name.substr(0, at) + "_l0" + name.substr(at + tag.size()), t);
        }
        auto one_m = copy(one, layer_sd);
        one_m.set_bf16_products(true);
        const Tensor h_l = h.narrow(0, l * D, D).contiguous();
        const Tensor c_l = cs.defined() ? cs.narrow(0, l * D, D).contiguous() : Tensor();
        in = run(one_m, in, h_l, c_l).output;
      }
      EXPECT_TRUE(equal(got.output, in)) << "max diff " << sub(got.output, in).abs().max().item();
    }
    // Kept: the same bits, nothing rounded or packed again.
    const int64_t packs = cache.packs();
    EXPECT_TRUE(equal(run(m, x, h, cs).output, got.output));
    EXPECT_EQ(cache.packs(), packs);
    // A forward that records a graph ignores it.
    {
      auto f = copy(c, sd);
      const Tensor xg = x.detach().clone().requires_grad_();
      EXPECT_TRUE(equal(m.forward(xg, h, cs).output, f.forward(xg, h, cs).output));
    }
    // A change of W_ih is seen (W_hh's: Bf16InferenceRunsOnRoundedRecurrentWeights).
    for (auto& [name, p] : m.module->named_parameters())
      if (name == "weight_ih_l0") {
        NoGradGuard guard;
        p.mul_(0.75);
      }
    const Tensor y2 = run(m, x, h, cs).output;
    EXPECT_FALSE(equal(y2, got.output));
    // Switched off: the float module's result again.
    m.set_bf16_products(false);
    auto f = copy(c, m.module->state_dict());
    EXPECT_TRUE(equal(run(m, x, h, cs).output, run(f, x, h, cs).output));
  });
  EXPECT_GT(checked, 0);
  EXPECT_GE(gaps_seen, checked * 9 / 10) << "h does not look rounded in the products";
}

// Training calls over one step (a decoder cell called step by step) keep W_hh
// packed between calls as inference does: a loop packs once between two
// optimizer steps, with the results of packing at every call, bit for bit.
// Training calls over more steps pack for themselves and keep nothing. In
// train mode W_ih is never kept packed (only eval mode's calls take it).
TEST(RnnModules, OneStepTrainingCallsKeepPackedWeights) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto layer = [](const char* kind, int64_t I, int64_t H, int64_t L, int64_t N, bool bidirectional) {
    return layer_config(kind, I, H, L, N, 1, bidirectional, "tanh");
  };
  const std::vector<json> configs = {
      layer("LSTMCell", 12, 32, 1, 2, false), layer("GRUCell", 20, 48, 1, 1, false),
      layer("RNNCell", 16, 96, 1, 40, false),  // a training-size batch: the GEMM or lanes path
      layer("LSTM", 24, 64, 1, 1, false),     layer("GRU", 16, 40, 2, 3, true),
      layer("LSTMCell", 512, 512, 1, 1, false),  // in train mode W_ih is not kept packed
  };
  for_each_isa_and_config(configs, [&](simd::Isa isa, const json& c) {
    const std::string kind = c["kind"];
    const bool cell = rnnkit::testing::rnn::is_cell(kind);
    const int64_t I = c["input_size"], H = c["hidden_size"], N = c["batch"];
    const int64_t expected = packed_calls(c);  // its configs take one step
    EXPECT_TRUE(expected > 0 || isa == simd::Isa::kScalar);
    Generator gen(rng());
    auto m = rnnkit::testing::rnn::build_model(c, &gen);
    Generator other(1);
    auto f = rnnkit::testing::rnn::build_model(c, &other);  // packs at every call
    f.module->load_state_dict(m.module->state_dict());
    const int steps = 4;
    std::vector<Tensor> xs;
    for (int t = 0; t < steps; ++t) xs.push_back(randn(cell ? Shape{N, I} : Shape{1, N, I}, {}, &gen));
    const Tensor h = cell ? randn({N, H}, {}, &gen) : Tensor();
    const Tensor cs = kind == "LSTMCell" ? randn({N, H}, {}, &gen) : Tensor();
    // steps calls with the same weights, their outputs' squares summed, then
    // backward: every parameter gradient gathers one term per call.
    auto loop = [&](rnnkit::testing::rnn::Model& model, bool repack) {
      Tensor loss;
      for (int t = 0; t < steps; ++t) {
        if (repack)  // a fresh writable pointer marks W_hh changed
          for (auto& [name, p] : model.module->named_parameters())
            if (name.rfind("weight_hh", 0) == 0) (void)p.data_ptr<float>();
        const Tensor y = model.forward(xs[static_cast<size_t>(t)], h, cs).output;
        loss = loss.defined() ? loss + sum(y * y) : sum(y * y);
      }
      loss.backward();
      return loss;
    };
    auto grads_equal = [&] {
      const auto a = m.module->named_parameters(), b = f.module->named_parameters();
      bool same = a.size() == b.size();
      for (size_t i = 0; same && i < a.size(); ++i) same = equal(a[i].second.grad(), b[i].second.grad());
      return same;
    };
    const nn::detail::PackedWeightsCache& kept = packed_cache_of(*m.module);
    const nn::detail::PackedWeightsCache& repacked = packed_cache_of(*f.module);
    EXPECT_TRUE(equal(loop(m, false), loop(f, true)));
    EXPECT_TRUE(grads_equal());
    EXPECT_EQ(kept.packs(), expected);
    EXPECT_EQ(repacked.packs(), steps * expected);

    // After an optimizer step the next loop packs once more.
    optim::SGD sgd_m(m.module->parameters(), optim::SGDOptions(0.1));
    optim::SGD sgd_f(f.module->parameters(), optim::SGDOptions(0.1));
    sgd_m.step();
    sgd_f.step();
    m.module->zero_grad();
    f.module->zero_grad();
    EXPECT_TRUE(equal(loop(m, false), loop(f, true)));
    EXPECT_TRUE(grads_equal());
    EXPECT_EQ(kept.packs(), 2 * expected);

    if (!cell) {  // a call over several steps packs for itself, keeping nothing
      sgd_m.step();
      const int64_t before = kept.packs();
      const Tensor y = m.forward(randn({3, N, I}, {}, &gen), h, cs).output;
      sum(y * y).backward();
      EXPECT_EQ(kept.packs(), before);
    }
  });
}

// Calls of one module within one graph (a decoder cell step by step, or a
// layer called twice) add their weight gradients into the sums the engine
// offers: every call's backward but the first to run does. The gradients are
// the sums of the calls' own gradients, also when another use of W_hh (a
// penalty) puts its gradient first, so that the first calls to run find a sum
// for W_hh alone and write their own.
TEST(RnnModules, CallsSharingWeightsSumGradientsInPlace) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<json> configs = {
      layer_config("LSTMCell", 12, 32, 1, 2, 1, false), layer_config("GRUCell", 20, 48, 1, 1, 1, false),
      layer_config("RNNCell", 16, 40, 1, 20, 1, false), layer_config("LSTM", 8, 24, 2, 3, 4, true),
      layer_config("GRU", 10, 16, 1, 1, 1, false),
  };
  for (const json& c : configs)
    for (bool penalty : {false, true}) {
      SCOPED_TRACE(c.dump() + (penalty ? " with a penalty on W_hh" : ""));
      const std::string kind = c["kind"];
      const bool cell = rnnkit::testing::rnn::is_cell(kind);
      const int64_t I = c["input_size"], H = c["hidden_size"], N = c["batch"], T = c["steps"];
      const int64_t LD = c["num_layers"].get<int64_t>() * (c["bidirectional"].get<bool>() ? 2 : 1);
      Generator gen(rng());
      auto m = rnnkit::testing::rnn::build_model(c, &gen);
      const int calls = 5;
      std::vector<Tensor> xs;
      for (int k = 0; k < calls; ++k) xs.push_back(randn(cell ? Shape{N, I} : Shape{T, N, I}, {}, &gen));
      const Tensor h = cell ? randn({N, H}, {}, &gen) : Tensor();
      const Tensor cs = kind == "LSTMCell" ? randn({N, H}, {}, &gen) : Tensor();
      auto w_hh_of = [](const nn::Module& module) {
        for (const auto& [name, p] : module.named_parameters())
          if (name == "weight_hh" || name == "weight_hh_l0") return p;
        return Tensor();
      };
      auto call_loss = [&](rnnkit::testing::rnn::Model& model, int k) {
        const Tensor y = model.forward(xs[static_cast<size_t>(k)], h, cs).output;
        return sum(y * y) * static_cast<double>(k + 1);
      };
      // All calls in one graph, the penalty (if any) created last: it runs first.
      const int64_t taken = nn::detail::recurrent_sums_taken();
      Tensor loss = call_loss(m, 0);
      for (int k = 1; k < calls; ++k) loss = loss + call_loss(m, k);
      if (penalty) loss = loss + sum(w_hh_of(*m.module) * w_hh_of(*m.module)) * 0.01;
      loss.backward();
      // With the penalty first, the last call (the first to run) finds a sum for
      // W_hh alone and writes its own gradients; the next ones add.
      EXPECT_EQ(nn::detail::recurrent_sums_taken() - taken, (calls - 1) * LD);

      // Each call alone on a copy of the module, the gradients summed in double.
      std::vector<std::vector<double>> want;
      for (int k = 0; k < calls; ++k) {
        Generator other(1);
        auto f = rnnkit::testing::rnn::build_model(c, &other);
        f.module->load_state_dict(m.module->state_dict());
        Tensor lk = call_loss(f, k);
        if (penalty && k == 0) lk = lk + sum(w_hh_of(*f.module) * w_hh_of(*f.module)) * 0.01;
        lk.backward();
        const auto params = f.module->named_parameters();
        if (want.empty()) want.resize(params.size());
        for (size_t i = 0; i < params.size(); ++i) {
          const std::vector<float> g = params[i].second.grad().to_vector<float>();
          want[i].resize(g.size(), 0.0);
          for (size_t j = 0; j < g.size(); ++j) want[i][j] += g[j];
        }
      }
      const auto params = m.module->named_parameters();
      ASSERT_EQ(params.size(), want.size());
      for (size_t i = 0; i < params.size(); ++i) {
        SCOPED_TRACE(params[i].first);
        const std::vector<float> got = params[i].second.grad().to_vector<float>();
        ASSERT_EQ(got.size(), want[i].size());
        double worst = 0, scale = 0;
        for (size_t j = 0; j < got.size(); ++j) {
          worst = std::max(worst, std::abs(got[j] - want[i][j]));
          scale = std::max(scale, std::abs(want[i][j]));
        }
        EXPECT_LE(worst, 1e-5 * std::max(1.0, scale));
      }
    }
}

// Calls alternating between batch sizes whose paths want different packed
// layouts (the small-batch walk and the GEMM path) keep one packing of each.
TEST(RnnModules, InferenceKeepsAPackingPerLayout) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  Generator gen(seed);
  const int64_t I = 16, H = 40, T = 5;
  nn::LSTM lstm(nn::LSTMOptions(I, H).generator(&gen));
  lstm->eval();
  // Packings of W_hh, and of W_ih where taken (eval mode), for a batch of N.
  auto packings_hh = [&](int64_t N) { return takes_packed(kernels::cpu::CellType::LSTM, I, H, N, T) ? 1 : 0; };
  auto packings = [&](int64_t N) {
    return packings_hh(N) + (takes_packed(kernels::cpu::CellType::LSTM, I, H, N, T, Packed::kInput) ? 1 : 0);
  };
  const Tensor small = randn({T, 1, I}, {}, &gen), large = randn({T, 40, I}, {}, &gen);
  auto run = [&](const Tensor& x) {
    NoGradGuard guard;
    return lstm->forward(x).output;
  };
  const Tensor y_small = run(small), y_large = run(large);
  const int64_t packs = lstm->packed_weights_cache().packs();
  EXPECT_EQ(packs, packings(1) + packings(40));
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(equal(run(small), y_small));
    EXPECT_TRUE(equal(run(large), y_large));
  }
  EXPECT_EQ(lstm->packed_weights_cache().packs(), packs);
  // After a change of W_hh each of its layouts is packed once more, and kept again.
  {
    NoGradGuard guard;
    lstm->named_parameters()[1].second.mul_(0.5);  // weight_hh_l0
  }
  const Tensor z_small = run(small), z_large = run(large);
  EXPECT_FALSE(equal(z_small, y_small));
  const int64_t repacked = packs + packings_hh(1) + packings_hh(40);
  EXPECT_EQ(lstm->packed_weights_cache().packs(), repacked);
  EXPECT_TRUE(equal(run(small), z_small));
  EXPECT_TRUE(equal(run(large), z_large));
  EXPECT_EQ(lstm->packed_weights_cache().packs(), repacked);
}

// ------------------------------------------------------------------ errors

TEST(RnnModules, BadOptionsThrow) {
  EXPECT_ERROR(nn::LSTM(nn::LSTMOptions(10, 20).proj_size(20)), "proj_size has to be smaller than hidden_size");
  EXPECT_ERROR(nn::LSTM(nn::LSTMOptions(10, 20).proj_size(-1)),
               "proj_size should be a positive integer or zero to disable projections");
  EXPECT_ERROR(nn::LSTM(nn::LSTMOptions(10, 20).dropout(1.5)),
               "dropout should be a number in range [0, 1] representing the probability of an element being zeroed");
  EXPECT_ERROR(nn::GRU(nn::GRUOptions(10, 20).dropout(-0.1)), "dropout should be a number in range [0, 1]");
  EXPECT_ERROR(nn::GRU(nn::GRUOptions(10, 20).proj_size(5)), "proj_size argument is only supported for LSTM, not RNN or GRU");
  EXPECT_ERROR(nn::RNN(nn::RNNOptions(10, 20).proj_size(5)), "proj_size argument is only supported for LSTM");
  EXPECT_ERROR(nn::RNN(nn::RNNOptions(10, 20).nonlinearity("sigmoid")), "Unknown nonlinearity 'sigmoid'");
  EXPECT_ERROR(nn::RNNCell(nn::RNNCellOptions(10, 20).nonlinearity("gelu")), "Unknown nonlinearity: gelu");
  EXPECT_ERROR(nn::LSTM(10, 0), "hidden_size must be positive, got 0");
  EXPECT_ERROR(nn::LSTM(0, 10), "input_size must be positive, got 0");
  EXPECT_ERROR(nn::GRU(nn::GRUOptions(10, 20).num_layers(0)), "num_layers must be positive, got 0");
  EXPECT_ERROR(nn::GRUCell(10, -1), "hidden_size must be positive, got -1");
  // PyTorch warns about dropout > 0 with one layer but builds the module.
  EXPECT_NO_THROW(nn::LSTM(nn::LSTMOptions(10, 20).dropout(0.5)));
}

TEST(RnnModules, BadInputsThrow) {
  nn::LSTM lstm(nn::LSTMOptions(10, 20).num_layers(2));
  nn::GRU gru(nn::GRUOptions(10, 20).num_layers(2));
  nn::RNN rnn(10, 20);
  EXPECT_ERROR(lstm->forward(randn({5, 3, 12})), "input.size(-1) must be equal to input_size. Expected 10, got 12");
  EXPECT_ERROR(gru->forward(randn({5, 12})), "input.size(-1) must be equal to input_size. Expected 10, got 12");
  EXPECT_ERROR(lstm->forward(randn({5, 3, 10, 1})), "input must have 3 dimensions");
  EXPECT_ERROR(rnn->forward(randn({10})), "input must have 3 dimensions");
  EXPECT_ERROR(lstm->forward(randn({5, 3, 10}), {randn({1, 3, 20}), randn({2, 3, 20})}),
               "Expected hidden[0] size (2, 3, 20), got [1, 3, 20]");
  EXPECT_ERROR(lstm->forward(randn({5, 3, 10}), {randn({2, 3, 20}), randn({2, 4, 20})}),
               "Expected hidden[1] size (2, 3, 20), got [2, 4, 20]");
  EXPECT_ERROR(gru->forward(randn({5, 3, 10}), randn({1, 3, 20})), "Expected hidden size (2, 3, 20), got [1, 3, 20]");
  EXPECT_ERROR(gru->forward(randn({5, 3, 10}), randn({2, 4, 20})), "Expected hidden size (2, 3, 20), got [2, 4, 20]");
  EXPECT_ERROR(nn::GRU(nn::GRUOptions(10, 20).batch_first(true))->forward(randn({3, 5, 10}), randn({1, 5, 20})),
               "Expected hidden size (1, 3, 20), got [1, 5, 20]");
  EXPECT_ERROR(gru->forward(randn({5, 10}), randn({2, 3, 20})),
               "For unbatched 2-D input, hx should also be 2-D but got 3-D tensor");
  EXPECT_ERROR(gru->forward(randn({5, 3, 10}), randn({2, 20})),
               "For batched 3-D input, hx should also be 3-D but got 2-D tensor");
  EXPECT_ERROR(lstm->forward(randn({5, 10}), {randn({2, 3, 20}), randn({2, 3, 20})}),
               "For unbatched 2-D input, hx and cx should also be 2-D but got (3-D, 3-D) tensors");
  EXPECT_ERROR(lstm->forward(randn({5, 3, 10}), {randn({2, 3, 20}), Tensor()}), "hx must hold both h0 and c0");
  EXPECT_ERROR(lstm->forward(randn({5, 3, 10}, kFloat64)), "input and parameter dtypes must match");
  EXPECT_ERROR(gru->forward(randn({5, 3, 10}), randn({2, 3, 20}, kFloat64)), "must have the input's dtype");
  EXPECT_ERROR(lstm->forward(randn({0, 3, 10})), "Expected sequence length to be larger than 0");
  // Packed input: batch = batch_sizes[0].
  auto packed = nn::utils::rnn::pack_padded_sequence(randn({5, 3, 10}), std::vector<int64_t>{5, 3, 2});
  EXPECT_ERROR(gru->forward(packed, randn({2, 4, 20})), "Expected hidden size (2, 3, 20), got [2, 4, 20]");
  auto wide = nn::utils::rnn::pack_padded_sequence(randn({5, 3, 11}), std::vector<int64_t>{5, 3, 2});
  EXPECT_ERROR(gru->forward(wide), "input.size(-1) must be equal to input_size. Expected 10, got 11");
  // Cells.
  nn::LSTMCell cell(10, 20);
  nn::GRUCell gcell(10, 20);
  EXPECT_ERROR(cell->forward(randn({3, 11})), "input has inconsistent input_size: got 11 expected 10");
  EXPECT_ERROR(cell->forward(randn({3, 3, 10})), "LSTMCell: Expected input to be 1-D or 2-D but received 3-D tensor");
  EXPECT_ERROR(cell->forward(randn({3, 10}), {randn({4, 20}), randn({3, 20})}),
               "Input batch size 3 doesn't match hidden0 batch size 4");
  EXPECT_ERROR(cell->forward(randn({3, 10}), {randn({3, 20}), randn({3, 21})}),
               "hidden1 has inconsistent hidden_size: got 21, expected 20");
  EXPECT_ERROR(gcell->forward(randn({3, 10}), randn({3, 21})), "hidden0 has inconsistent hidden_size: got 21, expected 20");
  EXPECT_ERROR(gcell->forward(randn({10}), randn({3, 20})),
               "For unbatched 1-D input, hidden0 should also be 1-D but got 2-D tensor");
}

}  // namespace
