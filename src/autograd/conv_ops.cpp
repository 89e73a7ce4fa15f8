// Differentiable 1-D convolution (functional::conv1d). float32 runs on
// oneDNN's convolution primitives (kernels/cpu/conv.h) wherever oneDNN has
// them; float64, and any shape oneDNN declines, on im2col + one GEMM per group
// over a chunk of the batch, forward and backward, as below.
//
// Shapes (after an unbatched input gains N = 1):
//   x    [N, C, L]        input, C = G * Cg
//   w    [O, Cg, K]       weight, O = G * Og
//   b    [O]              bias (optional)
//   y    [N, O, Lout]     Lout = (L + pad_left + pad_right - dilation*(K-1) - 1) / stride + 1
//   cols [G, Cg*K, n*Lout] for a chunk of n samples:
//        cols[g][c*K + k][j*Lout + l] = x[n0 + j, g*Cg + c, l*stride + k*dilation - pad_left] (0 outside)
// Forward:  y_g = w_g [Og, Cg*K] . cols_g
// Backward: dw_g += dy_g [Og, n*Lout] . cols_g^T;  dcols_g = w_g^T . dy_g, scattered back (col2im);
//           db = sum of dy over N and Lout.
#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>

#include "autograd/function.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/gemm.h"
#include "rnnkit/nn/conv.h"
#include "rnnkit/ops.h"
#include "tensor/native.h"

namespace rnnkit::nn::functional {

namespace {

using autograd::tensor_list;

struct ConvGeometry {
  int64_t N, C, L, O, K, G, Cg, Og, Lout;
  int64_t stride, dilation, pad_left, pad_right;
  // Samples per im2col chunk, so the column buffer stays near 1M elements (4 MB in float32: it is
  // written and then read by the GEMM while it is still in cache; 16 MB chunks measured 5-15% slower).
  int64_t chunk() const {
    const int64_t per_sample = std::max<int64_t>(C * K * Lout, 1);
    return std::max<int64_t>(1, std::min<int64_t>(N, (int64_t{1} << 20) / per_sample));
  }
};

// The outputs l in [first, last) whose input position l*stride + offset lies
// inside [0, L): the rest read the padding.
inline void valid_outputs(const ConvGeometry& s, int64_t offset, int64_t* first, int64_t* last) {
  // l*stride + offset >= 0  <=>  l >= ceil(-offset / stride); < L  <=>  l <= (L - 1 - offset) / stride.
  const int64_t lo = offset >= 0 ? 0 : (-offset + s.stride - 1) / s.stride;
  const int64_t hi = s.L - 1 - offset < 0 ? 0 : (s.L - 1 - offset) / s.stride + 1;
  *first = std::min(lo, s.Lout);
  *last = std::max(*first, std::min(hi, s.Lout));
}

// cols [G, Cg*K, n*Lout] for samples [n0, n0 + n) of x [N, C, L].
template <typename T>
void im2col(T* cols, const T* x, const ConvGeometry& s, int64_t n0, int64_t n) {
  const int64_t rows = s.C * s.K, width = n * s.Lout;
#pragma omp parallel for schedule(static) if (rows * width > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t channel = r / s.K, k = r % s.K;  // r = (g*Cg + c)*K + k: channel-major like cols
    T* out = cols + r * width;
    const int64_t offset = k * s.dilation - s.pad_left;
    int64_t first, last;
    valid_outputs(s, offset, &first, &last);
    for (int64_t j = 0; j < n; ++j) {
      const T* xrow = x + ((n0 + j) * s.C + channel) * s.L + offset;  // xrow[l * stride], l in [first, last)
      T* orow = out + j * s.Lout;
      std::fill(orow, orow + first, T(0));
      if (s.stride == 1)
        std::memcpy(orow + first, xrow + first, sizeof(T) * static_cast<size_t>(last - first));
      else
        for (int64_t l = first; l < last; ++l) orow[l] = xrow[l * s.stride];
      std::fill(orow + last, orow + s.Lout, T(0));
    }
  }
}

// dx[n0 + j, channel, pos] += dcols[...]: the adjoint of im2col.
template <typename T>
void col2im(T* dx, const T* dcols, const ConvGeometry& s, int64_t n0, int64_t n) {
  const int64_t width = n * s.Lout;
#pragma omp parallel for schedule(static) if (s.C * s.K * width > 65536)
  for (int64_t channel = 0; channel < s.C; ++channel) {
    for (int64_t k = 0; k < s.K; ++k) {
      const T* in = dcols + (channel * s.K + k) * width;
      const int64_t offset = k * s.dilation - s.pad_left;
      int64_t first, last;
      valid_outputs(s, offset, &first, &last);
      for (int64_t j = 0; j < n; ++j) {
        T* xrow = dx + ((n0 + j) * s.C + channel) * s.L + offset;  // xrow[l * stride], l in [first, last)
        const T* irow = in + j * s.Lout;
        if (s.stride == 1)
          for (int64_t l = first; l < last; ++l) xrow[l] += irow[l];
        else
          for (int64_t l = first; l < last; ++l) xrow[l * s.stride] += irow[l];
      }
    }
  }
}

// db[o] = the sum of dy[:, o, :] (accumulated in double).
template <typename T>
void sum_bias_gradient(T* db, const T* dy, const ConvGeometry& s) {
#pragma omp parallel for schedule(static) if (s.O * s.N * s.Lout > 65536)
  for (int64_t o = 0; o < s.O; ++o) {
    double acc = 0;
    for (int64_t n = 0; n < s.N; ++n) {
      const T* row = dy + (n * s.O + o) * s.Lout;
      for (int64_t l = 0; l < s.Lout; ++l) acc += row[l];
    }
    db[o] = static_cast<T>(acc);
  }
}

// Whether float32 takes oneDNN's convolution primitives for s (kernels/cpu/conv.h).
bool takes_onednn(const ConvGeometry& s) {
  return s.N * s.C * s.L <= kernels::cpu::kConvOnednnMaxElements &&
         s.N * s.O * s.Lout <= kernels::cpu::kConvOnednnMaxElements;
}

// The kernel layer's description of s, for oneDNN's convolution primitives.
kernels::cpu::Conv1dDims onednn_dims(const ConvGeometry& s, bool has_bias) {
  kernels::cpu::Conv1dDims d;
  d.N = s.N, d.C = s.C, d.L = s.L, d.O = s.O, d.K = s.K, d.groups = s.G;
  d.stride = s.stride, d.dilation = s.dilation, d.pad_left = s.pad_left, d.pad_right = s.pad_right;
  d.Lout = s.Lout;
  d.has_bias = has_bias;
  return d;
}

template <typename T>
void conv1d_forward(T* y, const T* x, const T* w, const T* b, const ConvGeometry& s) {
  if constexpr (std::is_same_v<T, float>) {
    if (takes_onednn(s) && kernels::cpu::conv1d_forward(onednn_dims(s, b != nullptr), x, w, b, y)) return;
  }
  const int64_t CgK = s.Cg * s.K, chunk = s.chunk();
  // Scratch, fully written before it is read (no zero-fill).
  std::unique_ptr<T[]> cols(new T[static_cast<size_t>(s.C * s.K * chunk * s.Lout)]);
  std::unique_ptr<T[]> tmp(new T[static_cast<size_t>(s.O * chunk * s.Lout)]);  // [G, Og, n*Lout]
  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t n = std::min(chunk, s.N - n0), width = n * s.Lout;
    im2col(cols.get(), x, s, n0, n);
    for (int64_t g = 0; g < s.G; ++g)
      kernels::cpu::gemm(false, false, s.Og, width, CgK, T(1), w + g * s.Og * CgK, CgK, cols.get() + g * CgK * width,
                         width, T(0), tmp.get() + g * s.Og * width, width);
    // y[n0 + j, o, :] = tmp[o][j*Lout : (j+1)*Lout] + b[o]   (o = g*Og + o_g: tmp is [O, n*Lout])
#pragma omp parallel for schedule(static) if (s.O * width > 65536)
    for (int64_t o = 0; o < s.O; ++o)
      for (int64_t j = 0; j < n; ++j) {
        const T* src = tmp.get() + o * width + j * s.Lout;
        T* dst = y + ((n0 + j) * s.O + o) * s.Lout;
        const T bias = b ? b[o] : T(0);
        for (int64_t l = 0; l < s.Lout; ++l) dst[l] = src[l] + bias;
      }
  }
}

// dx, dw, db: written (=) when non-null; dy [N, O, Lout] contiguous.
template <typename T>
void conv1d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const ConvGeometry& s,
                     bool has_bias) {
  if constexpr (std::is_same_v<T, float>) {
    // oneDNN's primitives where it has them for both parts that are wanted.
    const kernels::cpu::Conv1dDims d = onednn_dims(s, has_bias);
    const bool data = dx == nullptr || (takes_onednn(s) && kernels::cpu::conv1d_backward_data(d, dy, w, dx));
    const bool weights =
        data && (dw == nullptr || (takes_onednn(s) && kernels::cpu::conv1d_backward_weights(d, dy, x, dw, db)));
    if (data && weights && (dx != nullptr || dw != nullptr)) {
      if (dw == nullptr && db != nullptr) sum_bias_gradient(db, dy, s);
      return;
    }
  }
  const int64_t CgK = s.Cg * s.K, chunk = s.chunk();
  if (dx) {
    const int64_t total = s.N * s.C * s.L;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; ++i) dx[i] = T(0);
  }
  if (dw) std::fill(dw, dw + s.O * CgK, T(0));
  if (db) sum_bias_gradient(db, dy, s);
  if (!dx && !dw) return;
  std::unique_ptr<T[]> cols(new T[static_cast<size_t>(s.C * s.K * chunk * s.Lout)]);
  std::unique_ptr<T[]> dyt(new T[static_cast<size_t>(s.O * chunk * s.Lout)]);  // [G, Og, n*Lout] = [O, n*Lout]
  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t n = std::min(chunk, s.N - n0), width = n * s.Lout;
#pragma omp parallel for schedule(static) if (s.O * width > 65536)
    for (int64_t o = 0; o < s.O; ++o)
      for (int64_t j = 0; j < n; ++j)
        std::memcpy(dyt.get() + o * width + j * s.Lout, dy + ((n0 + j) * s.O + o) * s.Lout,
                    sizeof(T) * static_cast<size_t>(s.Lout));
    if (dw) {
      im2col(cols.get(), x, s, n0, n);
      for (int64_t g = 0; g < s.G; ++g)
        kernels::cpu::gemm(false, true, s.Og, CgK, width, T(1), dyt.get() + g * s.Og * width, width,
                           cols.get() + g * CgK * width, width, T(1), dw + g * s.Og * CgK, CgK);
    }
    if (dx) {
      for (int64_t g = 0; g < s.G; ++g)
        kernels::cpu::gemm(true, false, CgK, width, s.Og, T(1), w + g * s.Og * CgK, CgK, dyt.get() + g * s.Og * width,
                           width, T(0), cols.get() + g * CgK * width, width);
      col2im(dx, cols.get(), s, n0, n);
    }
  }
}

}  // namespace

Tensor conv1d(const Tensor& input, const Tensor& weight, const Tensor& bias, int64_t stride, const ConvPadding& padding,
              int64_t dilation, int64_t groups) {
  check_floating(input, "conv1d", "input");
  check_floating(weight, "conv1d", "weight");
  RNNKIT_CHECK(
      input.dim() == 2 || input.dim() == 3,
      "Expected 2D (unbatched) or 3D (batched) input to conv1d, but got input of size: ", shape_str(input.sizes()));
  const bool batched = input.dim() == 3;
  Tensor x = batched ? input : input.unsqueeze(0);
  RNNKIT_CHECK(weight.dim() == 3, "Expected ", weight.dim(), "-dimensional input for ", weight.dim(),
               "-dimensional weight ", shape_str(weight.sizes()), ", but got 3-dimensional input of size ",
               shape_str(x.sizes()), " instead");
  RNNKIT_CHECK(input.dtype() == weight.dtype(), "conv1d: expected scalar type ", dtype_name(input.dtype()),
               " but found ", dtype_name(weight.dtype()), " (weight)");
  RNNKIT_CHECK(stride > 0, "non-positive stride is not supported");
  RNNKIT_CHECK(padding.is_same() || padding.amount() >= 0, "negative padding is not supported");
  RNNKIT_CHECK(dilation > 0, "dilation should be greater than zero");
  RNNKIT_CHECK(groups > 0, "non-positive groups is not supported");
  RNNKIT_CHECK(!padding.is_same() || stride == 1, "padding='same' is not supported for strided convolutions");
  const Shape& ws = weight.sizes();
  RNNKIT_CHECK(ws[0] % groups == 0, "Given groups=", groups, ", expected weight to be divisible by ", groups,
               " at dimension 0, but got weight of size ", shape_str(ws), " instead");
  RNNKIT_CHECK(x.size(1) == ws[1] * groups, "Given groups=", groups, ", weight of size ", shape_str(ws),
               ", expected input", shape_str(x.sizes()), " to have ", ws[1] * groups, " channels, but got ", x.size(1),
               " channels instead");
  if (bias.defined()) {
    RNNKIT_CHECK(bias.dim() == 1 && bias.size(0) == ws[0], "Given weight of size ", shape_str(ws),
                 ", expected bias to be 1-dimensional with ", ws[0], " elements, but got bias of size ",
                 shape_str(bias.sizes()), " instead");
    RNNKIT_CHECK(bias.dtype() == input.dtype(), "conv1d: expected scalar type ", dtype_name(input.dtype()),
                 " but found ", dtype_name(bias.dtype()), " (bias)");
  }
  ConvGeometry s{};
  s.N = x.size(0);
  s.C = x.size(1);
  s.L = x.size(2);
  s.O = ws[0];
  s.K = ws[2];
  s.G = groups;
  s.Cg = ws[1];
  s.Og = s.O / groups;
  s.stride = stride;
  s.dilation = dilation;
  if (padding.is_same()) {
    // Extra padding for an even receptive field goes on the right, as PyTorch does.
    const int64_t total = dilation * (s.K - 1);
    s.pad_left = total / 2;
    s.pad_right = total - s.pad_left;
  } else {
    s.pad_left = s.pad_right = padding.amount();
  }
  const int64_t padded = s.L + s.pad_left + s.pad_right, span = dilation * (s.K - 1) + 1;
  RNNKIT_CHECK(padded >= span, "Calculated padded input size per channel: (", padded, "). Kernel size: (", span,
               "). Kernel size can't be greater than actual input size");
  s.Lout = (padded - span) / stride + 1;

  Tensor xc = native::contiguous(x.detach()), wc = native::contiguous(weight.detach());
  Tensor bc = bias.defined() ? native::contiguous(bias.detach()) : Tensor();
  Tensor y = empty({s.N, s.O, s.Lout}, TensorOptions(input.dtype()));
  dispatch_floating(input.dtype(), "conv1d", [&](auto tag) {
    using T = decltype(tag);
    conv1d_forward<T>(y.data_ptr<T>(), xc.data_ptr<T>(), wc.data_ptr<T>(), bc.defined() ? bc.data_ptr<T>() : nullptr,
                      s);
  });
  const bool need_x = input.requires_grad(), need_w = weight.requires_grad(),
             need_b = bias.defined() && bias.requires_grad();
  const Shape in_shape = input.sizes();
  const Dtype dtype = input.dtype();
  // Backward reads x only for dw and w only for dx.
  Tensor x_saved = need_w ? xc : Tensor(), w_saved = need_x ? wc : Tensor();
  const bool has_bias = bias.defined();
  auto backward = [x_saved, w_saved, s, dtype, need_x, need_w, need_b, has_bias, in_shape,
                   batched](const tensor_list& g) -> tensor_list {
    Tensor dy = native::contiguous(batched ? g[0] : g[0].unsqueeze(0));
    Tensor dx, dw, db;
    if (need_x) dx = empty({s.N, s.C, s.L}, TensorOptions(dtype));
    if (need_w) dw = empty({s.O, s.Cg, s.K}, TensorOptions(dtype));
    if (need_b) db = empty({s.O}, TensorOptions(dtype));
    dispatch_floating(dtype, "conv1d backward", [&](auto tag) {
      using T = decltype(tag);
      auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
      conv1d_backward<T>(ptr(dx), ptr(dw), ptr(db), dy.data_ptr<T>(), ptr(x_saved), ptr(w_saved), s, has_bias);
    });
    if (dx.defined()) dx = dx.view(in_shape);
    return {dx, dw, db};
  };
  y = autograd::record("ConvolutionBackward0", {input, weight, bias}, batched ? y : y.squeeze(0), backward);
  return y;
}

}  // namespace rnnkit::nn::functional
