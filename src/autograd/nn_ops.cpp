// Differentiable neural-network functions: softmax, log_softmax, embedding,
// dropout.
#include <cmath>

#include "autograd/function.h"
#include "rnnkit/ops.h"
#include "tensor/native.h"

namespace rnnkit {

using autograd::record;
using autograd::tensor_list;
using native::Binary;

Tensor softmax(const Tensor& x, int64_t dim) {
  Tensor y = native::softmax(x, dim, false);
  Tensor yd = y.detach();
  const int64_t d = x.dim() == 0 ? 0 : wrap_dim(dim, x.dim(), "softmax");
  return record("SoftmaxBackward0", {x}, y, [yd, d](const tensor_list& g) -> tensor_list {
    // dx = y * (g - sum(g*y, dim))
    Tensor gy = native::binary(g[0], yd, Binary::Mul, "softmax");
    Tensor s = yd.dim() == 0 ? gy : native::sum(gy, {d}, true);
    return {native::binary(yd, native::binary(g[0], s, Binary::Sub, "softmax"), Binary::Mul, "softmax")};
  });
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  Tensor y = native::softmax(x, dim, true);
  Tensor yd = y.detach();
  const int64_t d = x.dim() == 0 ? 0 : wrap_dim(dim, x.dim(), "log_softmax");
  return record("LogSoftmaxBackward0", {x}, y, [yd, d](const tensor_list& g) -> tensor_list {
    // dx = g - exp(y) * sum(g, dim)
    Tensor s = yd.dim() == 0 ? g[0] : native::sum(g[0], {d}, true);
    Tensor p = native::unary(yd, native::Unary::Exp);
    return {native::binary(g[0], native::binary(p, s, Binary::Mul, "log_softmax"), Binary::Sub, "log_softmax")};
  });
}

Tensor embedding(const Tensor& weight, const Tensor& indices, int64_t padding_idx) {
  check_floating(weight, "embedding", "weight");
  check_defined(indices, "embedding", "indices");
  RNNKIT_CHECK(indices.dtype() == kInt64, "embedding: Expected tensor for argument #1 'indices' to have scalar type Long; but got ",
               dtype_name(indices.dtype()), " instead");
  RNNKIT_CHECK(weight.dim() == 2, "embedding: 'weight' must be 2-D, got shape ", shape_str(weight.sizes()));
  const int64_t num = weight.size(0);
  Tensor flat = native::contiguous(indices.reshape({-1}));
  const int64_t* ip = flat.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < flat.numel(); ++i)
    RNNKIT_CHECK(ip[i] >= 0 && ip[i] < num, "embedding: index out of range in self (index ", ip[i],
                 ", num_embeddings ", num, ")");
  Tensor rows = native::index_select(weight, 0, flat);
  Shape out_shape = indices.sizes();
  out_shape.push_back(weight.size(1));
  Tensor out = rows.view(out_shape);
  const Shape wshape = weight.sizes();
  // The backward adds the looked-up rows' gradients into the weight's running
  // sum when the engine offers one (an embedding looked up at every step of a
  // loop), instead of a fresh [num_embeddings, dim] gradient per call.
  return record("EmbeddingBackward0", {weight}, out,
                [flat, wshape, padding_idx](const tensor_list& g, const tensor_list& sums) -> tensor_list {
                  Tensor go = native::contiguous(g[0]).reshape({-1, wshape[1]});
                  const int64_t skip = padding_idx >= 0 && padding_idx < wshape[0] ? padding_idx : -1;
                  Tensor sum = autograd::offered_sum(sums, 0, go.dtype(), wshape);
                  Tensor gw = sum.defined() ? Tensor() : zeros(wshape, TensorOptions(go.dtype()));
                  native::index_add_into(sum.defined() ? sum : gw, 0, flat, go, skip);
                  return {gw};
                });
}

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  check_floating(x, "dropout", "input");
  RNNKIT_CHECK(p >= 0.0 && p <= 1.0, "dropout: dropout probability has to be between 0 and 1, but got ", p);
  if (!training || p == 0.0) return x;
  if (p == 1.0) return mul(x, 0.0);
  Generator& g = gen ? *gen : default_generator();
  // mask holds 0 or 1/(1-p) so backward is one multiply.
  Tensor mask = empty(x.sizes(), TensorOptions(x.dtype()));
  const double scale = 1.0 / (1.0 - p);
  // Element i is kept where the i-th next_double() >= p, i.e. where its 53 bits
  // (next_u64() >> 11, an integer) are >= p * 2^53 (exact: a power-of-two
  // scaling), so >= its ceiling: drawn a block at a time (fill_u64) and
  // compared as integers, the same masks as one next_double() call per
  // element at a fraction of the time ([35, 20, 650] on a Zen 5 core: 3.1-3.4
  // ms -> 0.5 for the whole forward).
  const uint64_t cut = static_cast<uint64_t>(std::ceil(p * 9007199254740992.0));
  dispatch_floating(x.dtype(), "dropout", [&](auto tag) {
    using T = decltype(tag);
    T* m = mask.data_ptr<T>();
    // Selected from a table: a branch mispredicts half the time, and a
    // bool-to-float conversion chains each element to the previous one.
    const T value[2] = {T(0), static_cast<T>(scale)};
    constexpr int64_t kBlock = 1024;
    uint64_t bits[kBlock];
    for (int64_t i0 = 0, n = mask.numel(); i0 < n; i0 += kBlock) {
      const int64_t b = std::min(kBlock, n - i0);
      g.fill_u64(bits, b);
      for (int64_t j = 0; j < b; ++j) m[i0 + j] = value[(bits[j] >> 11) >= cut];
    }
  });
  Tensor out = native::binary(x, mask, Binary::Mul, "dropout");
  return record("MulBackward0", {x}, out, [mask](const tensor_list& gr) -> tensor_list {
    return {native::binary(gr[0], mask, Binary::Mul, "dropout")};
  });
}

}  // namespace rnnkit
