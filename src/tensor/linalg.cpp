// Matrix products on the kernel layer's GEMM (oneDNN sgemm for float32).
#include "kernels/cpu/gemm.h"
#include "tensor/native.h"

namespace rnnkit::native {

namespace {

// A 2-D operand the GEMM can read directly: row-major (trans=false) or
// column-major (trans=true) with a leading dimension; otherwise copied.
struct GemmOperand {
  Tensor holder;
  bool trans = false;
  int64_t ld = 1;
};

GemmOperand as_gemm_operand(const Tensor& m) {
  const int64_t rows = m.sizes()[0], cols = m.sizes()[1];
  const int64_t s0 = m.strides()[0], s1 = m.strides()[1];
  if (s1 == 1 && (rows <= 1 || s0 >= std::max<int64_t>(cols, 1))) return {m, false, std::max<int64_t>(s0, cols)};
  if (s0 == 1 && (cols <= 1 || s1 >= std::max<int64_t>(rows, 1))) return {m, true, std::max<int64_t>(s1, rows)};
  Tensor c = contiguous(m);
  return {c, false, std::max<int64_t>(cols, 1)};
}

// out = a b + beta out (out contiguous [M, N]; beta 0 does not read it).
template <typename T>
void gemm_2d(const Tensor& a, const Tensor& b, const Tensor& out, T beta = T(0)) {
  const int64_t M = a.sizes()[0], K = a.sizes()[1], N = b.sizes()[1];
  GemmOperand A = as_gemm_operand(a), B = as_gemm_operand(b);
  kernels::cpu::gemm(A.trans, B.trans, M, N, K, T(1), static_cast<const T*>(A.holder.const_raw_data()),
                     A.ld, static_cast<const T*>(B.holder.const_raw_data()), B.ld, beta,
                     static_cast<T*>(out.raw_data()), std::max<int64_t>(N, 1));
}

}  // namespace

Tensor mm(const Tensor& a, const Tensor& b) {
  check_floating(a, "mm", "input");
  check_floating(b, "mm", "mat2");
  RNNKIT_CHECK(a.dim() == 2, "mm: self must be a matrix, got ", a.dim(), "-D shape ", shape_str(a.sizes()));
  RNNKIT_CHECK(b.dim() == 2, "mm: mat2 must be a matrix, got ", b.dim(), "-D shape ", shape_str(b.sizes()));
  RNNKIT_CHECK(a.sizes()[1] == b.sizes()[0], "mm: mat1 and mat2 shapes cannot be multiplied (",
               a.sizes()[0], "x", a.sizes()[1], " and ", b.sizes()[0], "x", b.sizes()[1], ")");
  RNNKIT_CHECK(a.dtype() == b.dtype(), "mm: expected mat1 and mat2 to have the same dtype, but got: ",
               dtype_name(a.dtype()), " != ", dtype_name(b.dtype()));
  Tensor out = empty({a.sizes()[0], b.sizes()[1]}, TensorOptions(a.dtype()));
  dispatch_floating(a.dtype(), "mm", [&](auto tag) { gemm_2d<decltype(tag)>(a, b, out); });
  return out;
}

void mm_add_into(const Tensor& a, const Tensor& b, Tensor& out) {
  RNNKIT_CHECK(a.dim() == 2 && b.dim() == 2 && a.dtype() == b.dtype() && out.dtype() == a.dtype() &&
                   out.is_contiguous() && out.sizes() == (Shape{a.sizes()[0], b.sizes()[1]}) &&
                   a.sizes()[1] == b.sizes()[0],
               "mm_add_into: internal error, operands ", shape_str(a.sizes()), " x ", shape_str(b.sizes()),
               " into ", shape_str(out.sizes()));
  dispatch_floating(a.dtype(), "mm", [&](auto tag) {
    using T = decltype(tag);
    gemm_2d<T>(a, b, out, T(1));
  });
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  check_floating(a, "bmm", "input");
  check_floating(b, "bmm", "mat2");
  RNNKIT_CHECK(a.dim() == 3 && b.dim() == 3, "bmm: expected 3-D tensors, got ", shape_str(a.sizes()),
               " and ", shape_str(b.sizes()));
  RNNKIT_CHECK(a.sizes()[0] == b.sizes()[0] && a.sizes()[2] == b.sizes()[1],
               "bmm: shapes cannot be multiplied: ", shape_str(a.sizes()), " and ", shape_str(b.sizes()));
  RNNKIT_CHECK(a.dtype() == b.dtype(), "bmm: expected both inputs to have the same dtype, got ",
               dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  const int64_t B = a.sizes()[0];
  Tensor out = empty({B, a.sizes()[1], b.sizes()[2]}, TensorOptions(a.dtype()));
  dispatch_floating(a.dtype(), "bmm", [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < B; ++i)
      gemm_2d<T>(a.detach().select(0, i), b.detach().select(0, i), out.select(0, i));
  });
  return out;
}

}  // namespace rnnkit::native
