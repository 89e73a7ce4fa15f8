#pragma once
// One benchmark problem (a suite row's weights and data, in PyTorch's layouts)
// and the rnnkit side of it: the kernel layer called directly, with every buffer
// allocated once outside the timed calls (as the module would, from its cache).
#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "kernels/cpu/rnn.h"
#include "rnn_bench.h"

namespace rnnkit::bench {

// Allocates on 64-byte boundaries, as rnnkit's tensors are, so that the kernels
// see what a module gives them.
template <class T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <class U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) {
    void* p = ::operator new(n * sizeof(T), std::align_val_t(64));
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const Aligned64<U>&) const { return true; }
  template <class U>
  bool operator!=(const Aligned64<U>&) const { return false; }
};
using Floats = std::vector<float, Aligned64<float>>;

kernels::cpu::CellType cell_type(const std::string& cell);

// Peak growth of the resident set while fn runs, in bytes (VmHWM after minus
// VmRSS before, with VmHWM reset through /proc/self/clear_refs); -1 when the
// kernel does not offer that. Large allocations must come fresh from mmap for
// this to see them: call use_mmap_for_large_allocations() first.
int64_t peak_rss_growth(const std::function<void()>& fn);
// Makes malloc serve every allocation of 64 KiB or more by mmap and give it back
// on free, for the whole process (glibc's mallopt).
void use_mmap_for_large_allocations();
// Afterwards, for timing: blocks below 32 MiB come from the heap and stay there
// (what glibc's adaptive threshold converges to), so that code allocating
// buffers per call (sgemm's packing buffers) does not pay page faults each time.
void keep_freed_memory();

// Random weights, input and output gradient of one suite row, float32.
struct Problem {
  SuiteRow row;
  int64_t G = 0;              // gates
  Floats w_ih;    // [G*H, I]
  Floats w_hh;    // [G*H, H]
  Floats b_ih;    // [G*H]
  Floats b_hh;    // [G*H]
  Floats x;       // [T, N, I]
  Floats dy;      // [T, N, H]
  std::vector<int64_t> batch_sizes;  // [T], all N

  explicit Problem(const SuiteRow& r, uint64_t seed = 1);
  int64_t rows() const { return row.steps * row.batch; }
};

// rnnkit's kernels on a Problem. Inference: rnn_forward(training = false) with
// h_n (and c_n) written. Training step: rnn_forward(training = true, with
// dims.separate_scratch) then rnn_backward (with
// dims.overwrite_forward_workspace) with dy, giving dx and every parameter
// gradient (accumulated).
class RnnkitRnn {
 public:
  // allocate_training = false leaves the training buffers for the caller.
  explicit RnnkitRnn(const Problem& p, bool allocate_training = true);
  // Inference. prepacked: with W_hh packed once beforehand (rnn_pack_weights),
  // and W_ih where the forward takes it packed (rnn_pack_input_weights), as a
  // module in eval mode caches them (and as oneDNN's weights are reordered
  // once); else the call packs them itself.
  void forward_inference(bool prepacked = true);
  // Inference with W_hh packed in bfloat16 (PackedPrecision::kBFloat16, or
  // kBFloat16Products: h rounded too in the recurrent products), the explicit
  // reduced-precision options; small-batch rows only (packs_bf16).
  void forward_inference_bf16(
      kernels::cpu::PackedPrecision precision = kernels::cpu::PackedPrecision::kBFloat16);
  // Whether W_hh has a packed form for this problem (float32; bfloat16 only on
  // the small-batch path).
  bool packs_weights() const { return packs_; }
  bool packs_bf16() const { return packs_bf16_; }
  bool packs_bf16_products() const { return packs_bf16_products_; }
  void train_step();  // train_forward then train_backward
  void train_forward();
  void train_backward();
  std::vector<float> y() const { return std::vector<float>(y_.begin(), y_.end()); }
  std::vector<float> dx() const { return std::vector<float>(dx_.begin(), dx_.end()); }
  // Peak resident-memory growth of one training step whose buffers (workspaces,
  // outputs, gradients) are allocated inside it; -1 when /proc cannot tell.
  static int64_t peak_training_bytes(const Problem& p);
  // Bytes of those buffers, by the workspace-size functions.
  static int64_t training_buffer_bytes(const Problem& p);

 private:
  void allocate_backward();
  const Problem& p_;
  kernels::cpu::RnnLayerDims dims_;        // inference: one workspace
  kernels::cpu::RnnLayerDims dims_train_;  // training: separate_scratch
  kernels::cpu::RnnWeights<float> w_;
  Floats y_, h_n_, c_n_, ws_inference_, ws_training_, scratch_, ws_backward_, dx_;
  Floats dw_ih_, dw_hh_, db_ih_, db_hh_;
  bool packs_ = false, packs_bf16_ = false, packs_bf16_products_ = false;
  Floats packed_;  // W_hh packed for it, on the first prepacked inference
  Floats packed_bf16_, packed_bf16_products_;
  Floats packed_input_bf16_products_;  // W_ih for the bfloat16 products
  Floats packed_input_;  // W_ih packed, where the forward takes it (packed_input)
  // W_ih packed for the inference forward (on first use), or null where it
  // takes no packed W_ih.
  const float* packed_input();
};

}  // namespace rnnkit::bench
