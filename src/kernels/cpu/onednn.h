#pragma once
// What the kernels that call oneDNN primitives share (gemm.cpp, conv.cpp): the
// engine, each thread's stream and reusable buffers, and the thread count.
#include <cstddef>

#include <dnnl.hpp>

namespace rnnkit::kernels::cpu::onednn {

// oneDNN's OpenMP build takes its team size from the calling thread's OpenMP
// default: make it rnnkit's, one thread inside any parallel region. (oneDNN
// itself goes single-threaded only inside an active region; inside a one-thread
// team's region it would start a nested team of the inherited default size, and
// its sgemm's sums may then round differently from a one-thread run's.) Call it
// before creating or executing a primitive.
void use_rnnkit_threads();

const dnnl::engine& cpu_engine();

// The calling thread's oneDNN stream (making one per call cost 1-3 us, a few
// percent of a small per-step product).
dnnl::stream& thread_stream();

// The calling thread's buffer number `slot` of at least `bytes`, 64-byte
// aligned, kept (and grown) for the thread's life. A caller may hold one slot
// only until it calls something that may use the same slot.
enum ThreadBuffer : int {
  kScratchpadBuffer = 0,  // oneDNN primitives' scratchpads (scratchpad_mode::user)
  kDenseCopyBuffer,       // packed_gemm's dense copies of strided operands
  kPaddedCopyBuffer,      // padded_transposed_a_gemm's row-padded copies
  kConvSourceBuffer,      // conv.cpp: the source (or diff_dst) in the primitive's layout
  kConvWeightsBuffer,     // conv.cpp: the weights in the primitive's layout
  kConvDestBuffer,        // conv.cpp: the result in the primitive's layout
  kThreadBuffers
};
void* thread_buffer(int slot, size_t bytes);

}  // namespace rnnkit::kernels::cpu::onednn
