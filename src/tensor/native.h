#pragma once
// The tensor layer's compute functions: no autograd, results always new
// contiguous tensors unless stated. The differentiable ops in src/autograd/
// call these for both their forward and their backward.
#include <functional>

#include "tensor/tensor_impl.h"

namespace rnnkit::native {

// dst (any strides) <- src broadcast to dst's shape, converting dtype.
void copy_into(const Tensor& dst, const Tensor& src);
Tensor contiguous(const Tensor& t);

enum class Unary { Neg, Exp, Log, Tanh, Sigmoid, Relu, Sqrt, Abs, Sign };
Tensor unary(const Tensor& x, Unary op);
Tensor pow_scalar(const Tensor& x, double exponent);
Tensor clamp(const Tensor& x, double min, double max);

enum class Binary { Add, Sub, Mul, Div, Max, Min, Eq, Ne, Lt, Le, Gt, Ge };
// Broadcasting; the comparisons yield bool tensors. Both operands must share a
// dtype (PyTorch promotes; rnnkit asks the caller to convert explicitly).
Tensor binary(const Tensor& a, const Tensor& b, Binary op, const char* opname);
// a + alpha * b
Tensor add_scaled(const Tensor& a, const Tensor& b, double alpha, const char* opname);
// a += alpha * b straight into a, with add_scaled's bits, where that is plain:
// both contiguous, of one floating dtype, b's shape a's or its trailing dims
// (a row broadcast: a Linear layer's bias), on different storages (so no
// overlap). Returns false, touching nothing, otherwise.
bool add_scaled_into(Tensor& a, const Tensor& b, double alpha);
Tensor scalar_op(const Tensor& a, double b, Binary op);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// Reductions over `dims` (empty = all). keepdim as in PyTorch.
Tensor sum(const Tensor& x, const Shape& dims, bool keepdim);
struct MaxResult {
  Tensor values, indices;
};
MaxResult max_dim(const Tensor& x, int64_t dim, bool keepdim, bool is_min);

// Row-major matrix product of 2-D tensors (any strides), C = A B.
Tensor mm(const Tensor& a, const Tensor& b);
// out += a b (out contiguous [M, N], all of one floating dtype).
void mm_add_into(const Tensor& a, const Tensor& b, Tensor& out);
// Batched: a [B, M, K], b [B, K, N] -> [B, M, N].
Tensor bmm(const Tensor& a, const Tensor& b);

Tensor softmax(const Tensor& x, int64_t dim, bool log);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out = zeros(shape); out.index_select(dim, index) += src (index_add).
Tensor index_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src);
// out.index_select(dim, index) += src in place (out contiguous), leaving out
// the entries of index equal to skip.
void index_add_into(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, int64_t skip = -1);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src);
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);

}  // namespace rnnkit::native
