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

// Every output and gradient of two runs of one configuration, bit for bit.
void expect_identical(const Case& a, const Case& b) {
  ASSERT_EQ(a.got.size(), b.got.size()) << a.describe();
  for (const auto& [name, t] : a.got) {
    const Tensor* other = b.got.find(name);
    ASSERT_NE(other, nullptr) << name;
    EXPECT_EQ(sub(t, *other).abs().max().item(), 0.0) << a.label << " " << name << " differs with 1 thread: "
                                                        << a.describe();
  }
}

void run_kind(const std::string& kind) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (Dtype dtype : {kFloat32, kFloat64}) {
    const double tol_forward = dtype == kFloat32 ? 1e-5 : 1e-10;
    const double tol_backward = dtype == kFloat32 ? 1e-4 : 1e-10;
    std::vector<Case> cases;
    for (int i = 0; i < kConfigsPerKind; ++i) {
      cases.push_back(run_rnnkit(random_config(kind, rng), dtype, rng()));
      if (cases.size() == kBatch || i + 1 == kConfigsPerKind) {
        compare_with_torch(cases, tol_forward, tol_backward);
        cases.clear();
      }
    }
  }
}

// Stacked layers over long sequences at small batch, the shapes the module
// schedules across threads: unidirectional inference runs as a wavefront of
// time chunks, bidirectional layers run their directions concurrently (forward
// and backward). Against PyTorch, and exactly the same with one thread.
void run_stacked(const std::string& kind) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (Dtype dtype : {kFloat32, kFloat64}) {
    const double tol_forward = dtype == kFloat32 ? 1e-5 : 1e-10;
    const double tol_backward = dtype == kFloat32 ? 1e-4 : 1e-10;
    std::vector<Case> cases;
    for (int i = 0; i < 24; ++i) {
      const bool bidirectional = i % 2 == 1, no_grad = i % 4 != 3;
      const json cfg = random_stacked_config(kind, rng, bidirectional, no_grad);
      const uint64_t case_seed = rng();
      cases.push_back(run_rnnkit(cfg, dtype, case_seed));
      {
        ThreadCount one(1);
        const Case alone = run_rnnkit(cfg, dtype, case_seed);
        expect_identical(alone, cases.back());
      }
    }
    compare_with_torch(cases, tol_forward, tol_backward);
  }
}

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
