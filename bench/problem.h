#pragma once
// One benchmark problem (a suite row's weights and data, in PyTorch's layouts)
// and the rnnkit side of it: the kernel layer called directly, with every buffer
// allocated once outside the timed calls (as the module would, from its cache).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cpu/rnn.h"
#include "rnn_bench.h"

namespace rnnkit::bench {

kernels::cpu::CellType cell_type(const std::string& cell);

// Peak growth of the resident set while fn runs, in bytes (VmHWM after minus
// VmRSS before, with VmHWM reset through /proc/self/clear_refs); -1 when the
// kernel does not offer that. Large allocations must come fresh from mmap for
// this to see them: call use_mmap_for_large_allocations() first.
int64_t peak_rss_growth(const std::function<void()>& fn);
// Makes malloc serve every allocation of 64 KiB or more by mmap and give it back
// on free, for the whole process (glibc's mallopt).
void use_mmap_for_large_allocations();

// Random weights, input and output gradient of one suite row, float32.
struct Problem {
  SuiteRow row;
  int64_t G = 0;              // gates
  std::vector<float> w_ih;    // [G*H, I]
  std::vector<float> w_hh;    // [G*H, H]
  std::vector<float> b_ih;    // [G*H]
  std::vector<float> b_hh;    // [G*H]
  std::vector<float> x;       // [T, N, I]
  std::vector<float> dy;      // [T, N, H]
  std::vector<int64_t> batch_sizes;  // [T], all N

  explicit Problem(const SuiteRow& r, uint64_t seed = 1);
  int64_t rows() const { return row.steps * row.batch; }
};

// rnnkit's kernels on a Problem. Inference: rnn_forward(training = false) with
// h_n (and c_n) written. Training step: rnn_forward(training = true) then
// rnn_backward with dy, giving dx and every parameter gradient (accumulated).
class RnnkitRnn {
 public:
  explicit RnnkitRnn(const Problem& p);
  // Inference. prepacked: with W_hh packed once beforehand (rnn_pack_weights), as
  // a module in eval mode caches it, when this batch takes the small-batch path;
  // else the call packs W_hh itself.
  void forward_inference(bool prepacked = true);
  // Whether the small-batch path (and so packing) applies to this problem.
  bool packs_weights() const { return packs_; }
  void train_step();
  const std::vector<float>& y() const { return y_; }
  const std::vector<float>& dx() const { return dx_; }
  // Peak resident-memory growth of one training step whose buffers (workspaces,
  // outputs, gradients) are allocated inside it; -1 when /proc cannot tell.
  static int64_t peak_training_bytes(const Problem& p);
  // Bytes of those buffers, by the workspace-size functions.
  static int64_t training_buffer_bytes(const Problem& p);

 private:
  const Problem& p_;
  kernels::cpu::RnnLayerDims dims_;
  kernels::cpu::RnnWeights<float> w_;
  std::vector<float> y_, h_n_, c_n_, ws_inference_, ws_training_, ws_backward_, dx_;
  std::vector<float> dw_ih_, dw_hh_, db_ih_, db_hh_;
  bool packs_ = false;         // batches this small take the small-batch path
  std::vector<float> packed_;  // W_hh packed for it, on the first prepacked inference
};

}  // namespace rnnkit::bench
