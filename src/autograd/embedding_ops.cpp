// functional::embedding: PyTorch's F.embedding options on top of the core
// embedding op (rnnkit::embedding): padding_idx normalisation, max_norm
// renormalisation of the looked-up rows (in place, no history), and
// scale_grad_by_freq (its own node: each row's gradient divided by how often
// the row occurs in the batch).
#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <vector>

#include "autograd/function.h"
#include "rnnkit/nn/embedding.h"
#include "rnnkit/ops.h"
#include "tensor/native.h"

namespace rnnkit::nn::functional {

namespace {

using autograd::tensor_list;

// torch.embedding_renorm_: rows of `weight` named in `indices` whose p-norm
// exceeds max_norm are scaled by max_norm / (norm + 1e-7).
void embedding_renorm(const Tensor& weight, const std::vector<int64_t>& indices, double max_norm, double norm_type) {
  std::vector<int64_t> rows = indices;
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  const int64_t D = weight.size(1), s0 = weight.stride(0), s1 = weight.stride(1);
  dispatch_floating(weight.dtype(), "embedding_renorm_", [&](auto tag) {
    using T = decltype(tag);
    T* base = weight.data_ptr<T>();
    for (int64_t r : rows) {
      T* row = base + r * s0;
      double norm = 0;
      if (std::isinf(norm_type)) {
        for (int64_t j = 0; j < D; ++j) norm = std::max(norm, std::abs(static_cast<double>(row[j * s1])));
      } else {
        for (int64_t j = 0; j < D; ++j) norm += std::pow(std::abs(static_cast<double>(row[j * s1])), norm_type);
        norm = std::pow(norm, 1.0 / norm_type);
      }
      if (norm > max_norm) {
        const double scale = max_norm / (norm + 1e-7);
        for (int64_t j = 0; j < D; ++j) row[j * s1] = static_cast<T>(row[j * s1] * scale);
      }
    }
  });
}

}  // namespace

Tensor embedding(const Tensor& input, const Tensor& weight, const EmbeddingFuncOptions& options) {
  check_floating(weight, "embedding", "weight");
  check_defined(input, "embedding", "input");
  RNNKIT_CHECK(weight.dim() == 2, "embedding: 'weight' must be 2-D, got shape ", shape_str(weight.sizes()));
  RNNKIT_CHECK(input.dtype() == kInt64,
               "Expected tensor for argument #1 'indices' to have one of the following scalar types: Long, Int; but "
               "got ",
               dtype_name(input.dtype()), " instead (while checking arguments for embedding)");
  const int64_t num = weight.size(0);
  int64_t padding_idx = -1;
  if (options.padding_idx()) {
    padding_idx = *options.padding_idx();
    RNNKIT_CHECK(padding_idx < num && padding_idx >= -num, "Padding_idx must be within num_embeddings");
    if (padding_idx < 0) padding_idx += num;
  }
  std::vector<int64_t> flat = input.to_vector<int64_t>();
  for (int64_t i : flat) RNNKIT_CHECK(i >= 0 && i < num, "index out of range in self");
  if (options.max_norm()) {
    NoGradGuard guard;
    embedding_renorm(weight, flat, *options.max_norm(), options.norm_type());
  }
  if (!options.scale_grad_by_freq()) return rnnkit::embedding(weight, input, padding_idx);

  Tensor index = from_vector(flat);
  Shape out_shape = input.sizes();
  out_shape.push_back(weight.size(1));
  Tensor out = native::index_select(weight.detach(), 0, index).view(out_shape);
  const Shape wshape = weight.sizes();
  return autograd::record(
      "EmbeddingBackward0", {weight}, out, [index, flat, wshape, padding_idx](const tensor_list& g) -> tensor_list {
        std::unordered_map<int64_t, int64_t> counts;
        for (int64_t i : flat) ++counts[i];
        std::vector<double> inv(flat.size());
        for (size_t k = 0; k < flat.size(); ++k) inv[k] = 1.0 / static_cast<double>(counts[flat[k]]);
        Tensor go = native::contiguous(g[0]).reshape({-1, wshape[1]});
        Tensor scale = from_vector(inv, {static_cast<int64_t>(inv.size()), 1}).to(go.dtype());
        Tensor gw = native::index_add(wshape, 0, index, native::binary(go, scale, native::Binary::Mul, "embedding"));
        if (padding_idx >= 0) native::copy_into(gw.select(0, padding_idx), scalar_tensor(0.0, gw.dtype()));
        return {gw};
      });
}

}  // namespace rnnkit::nn::functional
