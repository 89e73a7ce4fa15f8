// Live PyTorch parity of nn::RNN, nn::LSTM, nn::GRU and the three cells on
// fresh random configurations every run (sizes, layers, bias, batch_first,
// bidirectional, projection, initial state or not, unbatched, padded and
// packed with random unsorted lengths, dropout configured in eval mode):
// output, h_n, c_n and the gradients of the input, the initial states and
// every parameter, in float32 and float64. PyTorch runs rnnkit's initial
// weights. Replay a failure with RNNKIT_TEST_SEED=<seed printed>.
#include <gtest/gtest.h>

#include "nn/rnn_parity_cases.h"
#include "rnnkit/threading.h"

namespace {

using namespace rnnkit;
using namespace rnnkit::testing::rnn;

constexpr int kConfigsPerKind = 200;  // per dtype
constexpr size_t kBatch = 50;         // configurations per oracle request

// Sets rnnkit's thread count for a scope.
struct ThreadCount {
  explicit ThreadCount(int n) { rnnkit::set_num_threads(n); }
  ~ThreadCount() { rnnkit::set_num_threads(0); }
};

// Every output and gradient of two runs of one configuration, bit for bit;
// with forward_only, the outputs alone.
void expect_identical(const Case& a, const Case& b, bool forward_only = false) {
  ASSERT_EQ(a.got.size(), b.got.size()) << a.describe();
  for (const auto& [name, t] : a.got) {
    if (forward_only && name.rfind("grad", 0) == 0) continue;
    const Tensor* other = b.got.find(name);
    ASSERT_NE(other, nullptr) << name;
    EXPECT_EQ(sub(t, *other).abs().max().item(), 0.0) << a.label << " " << name << " differs with 1 thread: "
                                                        << a.describe();
  }
}

// From one fresh seed, in float32 and float64: configuration i is make(rng, i, dtype),
// run through rnnkit, then check(cfg, dtype, seed, result); the results go to
// PyTorch in batches and every output and gradient is compared.
template <class Make, class Check>
void run_cases(int count, Make&& make, Check&& check) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (Dtype dtype : {kFloat32, kFloat64}) {
    const double tol_forward = dtype == kFloat32 ? 1e-5 : 1e-10;
    const double tol_backward = dtype == kFloat32 ? 1e-4 : 1e-10;
    std::vector<Case> cases;
    for (int i = 0; i < count; ++i) {
      const json cfg = make(rng, i, dtype);
      const uint64_t case_seed = rng();
      cases.push_back(run_rnnkit(cfg, dtype, case_seed));
      check(cfg, dtype, case_seed, cases.back());
      if (cases.size() == kBatch || i + 1 == count) {
        compare_with_torch(cases, tol_forward, tol_backward);
        cases.clear();
      }
    }
  }
}

void run_kind(const std::string& kind) {
  run_cases(
      kConfigsPerKind, [&](std::mt19937_64& rng, int, Dtype) { return random_config(kind, rng); },
      [](const json&, Dtype, uint64_t, const Case&) {});
}

// Stacked layers over long sequences at small batch, the shapes the module
// schedules across threads: unidirectional inference runs as a wavefront of
// time chunks, bidirectional layers run their directions concurrently (forward
// and backward). Against PyTorch, and exactly the same with one thread.
void run_stacked(const std::string& kind) {
  run_cases(
      24,
      [&](std::mt19937_64& rng, int i, Dtype dtype) {
        const bool bidirectional = i % 2 == 1, no_grad = i % 4 != 3;
        return random_stacked_config(kind, rng, bidirectional, no_grad, dtype == kFloat64);
      },
      [](const json& cfg, Dtype dtype, uint64_t case_seed, const Case& got) {
        ThreadCount one(1);
        expect_identical(run_rnnkit(cfg, dtype, case_seed), got);
      });
}

// Layers whose batches take the kernels' rows-in-lanes product (14 to 16 rows,
// W_hh of at least 6 MB: LSTM H = 640, GRU 740, Elman 1280) over short
// sequences, padded or packed, one or two directions; against PyTorch, and the
// same forward bits with one thread (the backward's whole-sequence products are
// oneDNN sgemm calls, whose rounding may depend on the thread count at these
// batches). Elman relu in float64 only, as in run_stacked.
void run_lanes(const std::string& kind) {
  run_cases(
      4,
      [&](std::mt19937_64& rng, int i, Dtype dtype) {
        json c = random_config(kind, rng);
        c["hidden_size"] = kind == "LSTM" ? 640 : kind == "GRU" ? 740 : 1280;
        c["batch"] = pick(rng, 14, 16);
        c["steps"] = pick(rng, 2, 5);
        c["num_layers"] = 1;
        c["proj_size"] = 0;
        c["unbatched"] = false;
        c["bidirectional"] = i % 2 == 1;
        if (kind == "RNN") c["nonlinearity"] = dtype == kFloat64 && chance(rng, 0.5) ? "relu" : "tanh";
        if (c["packed"].get<bool>()) set_random_lengths(c, rng);  // for the new batch and steps
        return c;
      },
      [](const json& cfg, Dtype dtype, uint64_t case_seed, const Case& got) {
        ThreadCount one(1);
        expect_identical(run_rnnkit(cfg, dtype, case_seed), got, /*forward_only=*/true);
      });
}

// Inference with set_bf16_inference(true) against PyTorch running the same
// module with every weight_hh_l* rounded to bfloat16 (Tensor.bfloat16()),
// forward only: small batches (the kernels' bfloat16-packed W_hh, LSTM
// projections included), batches past the small-batch path (W_hh rounded in
// the layer's dtype), stacked layers over long sequences (the wavefront's
// chunks), packed and padded. The unrounded weights differ from these by ~1e-3, far outside the
// tolerance, so a call that skipped the rounding anywhere fails.
void run_bf16(const std::string& kind) {
  run_cases(
      40,
      [&](std::mt19937_64& rng, int i, Dtype dtype) {
        json c = i % 4 == 3 && !is_cell(kind) ? random_stacked_config(kind, rng, chance(rng, 0.5), true,
                                                                       dtype == kFloat64)
                                             : random_config(kind, rng);
        if (chance(rng, 0.5)) c["hidden_size"] = pick(rng, 16, 80);
        if (!is_cell(kind) && c.value("proj_size", 0) >= c["hidden_size"].get<int64_t>()) c["proj_size"] = 0;
        c["batch"] = chance(rng, 0.25) ? pick(rng, 40, 64) : pick(rng, 1, 12);
        if (c.value("packed", false)) set_random_lengths(c, rng);  // for the new batch
        c["no_grad"] = true;
        c["bf16_inference"] = true;
        return c;
      },
      [](const json&, Dtype, uint64_t, const Case&) {});
}

// Inference with set_bf16_products(true) over one step (the cells, and
// one-layer layers of one step, where no rounding of an h that the two sides
// computed apart enters), against PyTorch running the same module on x, h0,
// weight_ih and weight_hh rounded to bfloat16 (Tensor.bfloat16()): small
// batches (the kernels' bfloat16 products), batches past the small-batch path
// (x and h rounded by the kernels, the weights by the module), both
// directions, float32 and float64. Rounding any of them differently shows far
// outside the tolerance. Over whole sequences: RnnModules.Bf16Products*.
void run_bf16_products(const std::string& kind) {
  run_cases(
      40,
      [&](std::mt19937_64& rng, int, Dtype) {
        json c = random_config(kind, rng);
        if (chance(rng, 0.5)) c["hidden_size"] = pick(rng, 16, 80);
        c["batch"] = chance(rng, 0.25) ? pick(rng, 40, 64) : pick(rng, 1, 12);
        if (!is_cell(kind)) {
          c["steps"] = 1;
          c["num_layers"] = 1;
          c["packed"] = false;
          if (c.value("proj_size", 0) >= c["hidden_size"].get<int64_t>()) c["proj_size"] = 0;
        }
        c["no_grad"] = true;
        c["bf16_products"] = true;
        return c;
      },
      [](const json&, Dtype, uint64_t, const Case&) {});
}

TEST(RnnParity, Bf16ProductsOneStep) {
  for (const char* kind : {"LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"}) run_bf16_products(kind);
}

TEST(RnnParity, Bf16InferenceLSTM) { run_bf16("LSTM"); }
TEST(RnnParity, Bf16InferenceGRU) { run_bf16("GRU"); }
TEST(RnnParity, Bf16InferenceRNN) { run_bf16("RNN"); }
TEST(RnnParity, Bf16InferenceCells) {
  run_bf16("LSTMCell");
  run_bf16("GRUCell");
  run_bf16("RNNCell");
}

TEST(RnnParity, LanesLSTM) { run_lanes("LSTM"); }
TEST(RnnParity, LanesGRU) { run_lanes("GRU"); }
TEST(RnnParity, LanesRNN) { run_lanes("RNN"); }

TEST(RnnParity, StackedLSTM) { run_stacked("LSTM"); }
TEST(RnnParity, StackedGRU) { run_stacked("GRU"); }
TEST(RnnParity, StackedRNN) { run_stacked("RNN"); }

TEST(RnnParity, LSTM) { run_kind("LSTM"); }
TEST(RnnParity, GRU) { run_kind("GRU"); }
TEST(RnnParity, RNN) { run_kind("RNN"); }
TEST(RnnParity, LSTMCell) { run_kind("LSTMCell"); }
TEST(RnnParity, GRUCell) { run_kind("GRUCell"); }
TEST(RnnParity, RNNCell) { run_kind("RNNCell"); }

}  // namespace
