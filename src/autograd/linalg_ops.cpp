// Differentiable matmul / mm / bmm / linear, joining and indexing ops.
#include "autograd/function.h"
#include "rnnkit/ops.h"
#include "tensor/iter.h"
#include "tensor/native.h"

namespace rnnkit {

using autograd::record;
using autograd::sum_to;
using autograd::tensor_list;

Tensor mm(const Tensor& a, const Tensor& b) {
  Tensor out = native::mm(a, b);
  Tensor ad = a.detach(), bd = b.detach();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  return record("MmBackward0", {a, b}, out, [ad, bd, need_a, need_b](const tensor_list& g) -> tensor_list {
    Tensor ga, gb;
    if (need_a) ga = native::mm(g[0], bd.t());
    if (need_b) gb = native::mm(ad.t(), g[0]);
    return {ga, gb};
  });
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  Tensor out = native::bmm(a, b);
  Tensor ad = a.detach(), bd = b.detach();
  return record("BmmBackward0", {a, b}, out, [ad, bd](const tensor_list& g) -> tensor_list {
    return {native::bmm(g[0], bd.transpose(1, 2)), native::bmm(ad.transpose(1, 2), g[0])};
  });
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_floating(a, "matmul", "input");
  check_floating(b, "matmul", "other");
  RNNKIT_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both arguments to matmul need to be at least 1D, but they are ",
               a.dim(), "D and ", b.dim(), "D");
  if (a.dim() == 1 && b.dim() == 1) {
    RNNKIT_CHECK(a.size(0) == b.size(0), "matmul: inconsistent tensor size, expected tensor [", a.size(0),
                 "] and src [", b.size(0), "] to have the same number of elements, but got ", a.size(0),
                 " and ", b.size(0), " elements respectively");
    return sum(mul(a, b));
  }
  if (a.dim() == 2 && b.dim() == 1) return mm(a, b.unsqueeze(1)).squeeze(1);
  if (a.dim() == 1 && b.dim() == 2) return mm(a.unsqueeze(0), b).squeeze(0);
  if (a.dim() == 2 && b.dim() == 2) return mm(a, b);
  if (b.dim() <= 2) {
    // [*, M, K] x [K, N]: fold the batch into rows, one GEMM.
    Tensor bb = b.dim() == 1 ? b.unsqueeze(1) : b;
    Shape lead(a.sizes().begin(), a.sizes().end() - 1);
    Tensor r = mm(a.reshape({-1, a.size(-1)}), bb);
    lead.push_back(bb.size(1));
    Tensor out = r.reshape(lead);
    return b.dim() == 1 ? out.squeeze(-1) : out;
  }
  // General batched case with broadcast batch dimensions.
  Tensor aa = a.dim() == 1 ? a.unsqueeze(0) : a;
  Tensor bb = b;
  const int64_t M = aa.size(-2), K = aa.size(-1), N = bb.size(-1);
  RNNKIT_CHECK(bb.size(-2) == K, "matmul: shapes cannot be multiplied (", shape_str(a.sizes()), " and ",
               shape_str(b.sizes()), ")");
  Shape ba(aa.sizes().begin(), aa.sizes().end() - 2), bbs(bb.sizes().begin(), bb.sizes().end() - 2);
  Shape batch = broadcast_shapes(ba, bbs, "matmul");
  Shape ea = batch, eb = batch;
  ea.insert(ea.end(), {M, K});
  eb.insert(eb.end(), {K, N});
  int64_t B = 1;
  for (int64_t s : batch) B *= s;
  Tensor r = bmm(aa.expand(ea).reshape({B, M, K}), bb.expand(eb).reshape({B, K, N}));
  Shape out_shape = batch;
  if (a.dim() > 1) out_shape.push_back(M);
  out_shape.push_back(N);
  return r.reshape(out_shape);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_floating(x, "linear", "input");
  check_floating(weight, "linear", "weight");
  RNNKIT_CHECK(weight.dim() == 2, "linear: weight must be 2-D [out_features, in_features], got shape ",
               shape_str(weight.sizes()));
  RNNKIT_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: mat1 and mat2 shapes cannot be multiplied (",
               x.dim() >= 1 ? x.numel() / std::max<int64_t>(x.size(-1), 1) : 1, "x", x.dim() >= 1 ? x.size(-1) : 0,
               " and ", weight.size(1), "x", weight.size(0), ")");
  RNNKIT_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
               "linear: bias must have shape [", weight.size(0), "], got ", shape_str(bias.sizes()));
  RNNKIT_CHECK(x.dtype() == weight.dtype() && (!bias.defined() || bias.dtype() == weight.dtype()),
               "linear: expected input, weight and bias to have the same dtype, got ", dtype_name(x.dtype()), ", ",
               dtype_name(weight.dtype()), " and ", bias.defined() ? dtype_name(bias.dtype()) : "none");
  // One node for y = x W^T + b over x's rows: its backward gives dW in W's
  // own layout (added into the engine's running sum when it offers one, as
  // for a projection applied at every step of a loop) and db as a row sum.
  const int64_t in = weight.size(1), out_features = weight.size(0);
  const Tensor xd = x.detach(), wd = weight.detach();
  const Tensor x2 = x.dim() == 1 ? xd.unsqueeze(0) : xd.reshape({-1, in});
  Tensor y2 = native::mm(x2, wd.t());
  // The bias added into the fresh product in place (a broadcast add into a new
  // tensor cost an allocation and a second stream: a language model's output
  // layer, 700 rows of 650 -> 10000, on two Zen 5 cores, the whole forward
  // 21.1-21.4 -> 20.0-20.3 ms, of which sgemm ~19.1); the same sums.
  if (bias.defined() && !native::add_scaled_into(y2, native::contiguous(bias.detach()), 1.0))
    y2 = native::binary(y2, bias.detach(), native::Binary::Add, "linear");
  Shape out_shape(x.sizes().begin(), x.sizes().end() - 1);
  out_shape.push_back(out_features);
  Tensor y = y2.view(out_shape);
  const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
  const bool need_b = bias.defined() && bias.requires_grad();
  return record(bias.defined() ? "AddmmBackward0" : "MmBackward0", {x, weight, bias}, y,
                [x2, wd, need_x, need_w, need_b, out_features, x_shape = x.sizes()](
                    const tensor_list& g, const tensor_list& sums) -> tensor_list {
                  const Tensor g2 = native::contiguous(g[0]).view({-1, out_features});
                  Tensor gx, gw, gb;
                  if (need_x) gx = native::mm(g2, wd).view(x_shape);
                  if (need_w) {
                    Tensor sum = autograd::offered_sum(sums, 1, wd.dtype(), wd.sizes());
                    if (sum.defined())
                      native::mm_add_into(g2.t(), x2, sum);
                    else
                      gw = native::mm(g2.t(), x2);
                  }
                  if (need_b) gb = native::sum(g2, {0}, false);
                  return {gx, gw, gb};
                });
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  Tensor out = native::cat(tensors, dim);
  const int64_t d = wrap_dim(dim, tensors[0].dim(), "cat");
  std::vector<int64_t> lengths;
  for (const Tensor& t : tensors) lengths.push_back(t.size(d));
  return record("CatBackward0", tensors, out, [d, lengths](const tensor_list& g) -> tensor_list {
    tensor_list parts;
    int64_t pos = 0;
    for (int64_t len : lengths) {
      parts.push_back(native::contiguous(g[0].narrow(d, pos, len)));
      pos += len;
    }
    return parts;
  });
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  RNNKIT_CHECK(!tensors.empty(), "stack: expects a non-empty TensorList");
  const int64_t d = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  for (size_t i = 0; i < tensors.size(); ++i) {
    check_defined(tensors[i], "stack", "tensors[i]");
    RNNKIT_CHECK(tensors[i].sizes() == tensors[0].sizes(), "stack: stack expects each tensor to be equal size, but got ",
                 shape_str(tensors[0].sizes()), " at entry 0 and ", shape_str(tensors[i].sizes()), " at entry ", i);
    parts.push_back(tensors[i].unsqueeze(d));
  }
  return cat(parts, d);
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  Tensor out = native::index_select(x, dim, index);
  const int64_t d = wrap_dim(dim, x.dim(), "index_select");
  const Shape in_shape = x.sizes();
  Tensor idx = index.detach();
  return record("IndexSelectBackward0", {x}, out, [d, in_shape, idx](const tensor_list& g) -> tensor_list {
    return {native::index_add(in_shape, d, idx, g[0])};
  });
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  Tensor out = native::gather(x, dim, index);
  const int64_t d = wrap_dim(dim, x.dim(), "gather");
  const Shape in_shape = x.sizes();
  Tensor idx = index.detach();
  return record("GatherBackward0", {x}, out, [d, in_shape, idx](const tensor_list& g) -> tensor_list {
    return {native::scatter_add(in_shape, d, idx, g[0])};
  });
}

}  // namespace rnnkit
