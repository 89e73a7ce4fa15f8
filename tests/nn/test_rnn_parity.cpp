// Live PyTorch parity of nn::RNN, nn::LSTM, nn::GRU and the three cells on
// fresh random configurations every run (sizes, layers, bias, batch_first,
// bidirectional, projection, initial state or not, unbatched, padded and
// packed with random unsorted lengths, dropout configured in eval mode):
// output, h_n, c_n and the gradients of the input, the initial states and
// every parameter, in float32 and float64. PyTorch runs rnnkit's initial
// weights. Replay a failure with RNNKIT_TEST_SEED=<seed printed>.
#include <gtest/gtest.h>

#include "nn/rnn_parity_cases.h"

namespace {

using namespace rnnkit;
using namespace rnnkit::testing::rnn;

constexpr int kConfigsPerKind = 200;  // per dtype
constexpr size_t kBatch = 50;         // configurations per oracle request

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

TEST(RnnParity, LSTM) { run_kind("LSTM"); }
TEST(RnnParity, GRU) { run_kind("GRU"); }
TEST(RnnParity, RNN) { run_kind("RNN"); }
TEST(RnnParity, LSTMCell) { run_kind("LSTMCell"); }
TEST(RnnParity, GRUCell) { run_kind("GRUCell"); }
TEST(RnnParity, RNNCell) { run_kind("RNNCell"); }

}  // namespace
