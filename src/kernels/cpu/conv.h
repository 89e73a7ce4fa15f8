#pragma once
// float32 1-D convolution through oneDNN's convolution primitives, on the
// layouts the primitives choose (blocked over channels on AVX-512/AVX2 CPUs),
// the plain tensors reordered in and out per call:
//   x [N, C, L], w [O, C/groups, K], b [O], y [N, O, Lout], all row-major.
// Primitives are made on first use and cached per shape and thread count.
// The blocked copies live in the calling thread's buffers (onednn.h), kept for
// the thread's life at the size of the largest call so far: no page faults per
// call, at the cost of about one layer's input, output and weights per thread.
// Each function returns false, touching nothing, when oneDNN has no primitive
// for these dims; callers then use their own path.
#include <cstdint>

namespace rnnkit::kernels::cpu {

// Where callers take these kernels: when x and y have at most this many
// elements each (4 MiB in float32). Measured on the 2-core AVX-512 Xeon
// (Conv1d C -> C, forward + backward, alternating processes): C = 32 and 64 at
// 0.4-1.6 MB per tensor 0.75-0.95 of the im2col path's time; at 8 and 16 MB
// per tensor (C = 128, 256) level or 5-10% slower (dilation 8), the reorders
// costing what the direct convolution gains, and the kept buffers growing
// with the layer.
constexpr int64_t kConvOnednnMaxElements = int64_t{1} << 20;

struct Conv1dDims {
  int64_t N = 0, C = 0, L = 0, O = 0, K = 0, groups = 1;
  int64_t stride = 1, dilation = 1, pad_left = 0, pad_right = 0;
  int64_t Lout = 0;  // (L + pad_left + pad_right - dilation*(K-1) - 1) / stride + 1
  bool has_bias = false;  // the layer has one: the forward takes b, the weights' backward writes db
};

// y = conv(x, w) + b (b given exactly when d.has_bias).
bool conv1d_forward(const Conv1dDims& d, const float* x, const float* w, const float* b, float* y);
// dx = the gradient w.r.t. x of sum(y * dy) (written).
bool conv1d_backward_data(const Conv1dDims& d, const float* dy, const float* w, float* dx);
// dw (and db when non-null, with d.has_bias) = the gradients w.r.t. w and b (written).
bool conv1d_backward_weights(const Conv1dDims& d, const float* dy, const float* x, float* dw, float* db);

}  // namespace rnnkit::kernels::cpu
