#pragma once
// Strided N-d iteration shared by the elementwise ops, copies and reductions.
// Operands are described by a base pointer and one stride per dimension of the
// iteration shape (0 on broadcast dimensions). The innermost dimension is run
// as a tight loop so contiguous cases vectorise.
#include <array>
#include <cstdint>
#include <vector>

#include "tensor/tensor_impl.h"

namespace rnnkit {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Strides that read `t` as if expanded to `shape` (t's shape must broadcast to it).
Shape broadcast_strides(const Tensor& t, const Shape& shape);

// body(offsets, n, inner_strides): offsets[k] is the element offset of operand
// k at the start of an innermost row of n elements.
template <size_t K, typename Body>
void nd_loop(const Shape& shape, const std::array<Shape, K>& strides, Body&& body) {
  const int64_t ndim = static_cast<int64_t>(shape.size());
  for (int64_t s : shape)
    if (s == 0) return;
  std::array<int64_t, K> inner{};
  if (ndim == 0) {
    std::array<int64_t, K> offs{};
    body(offs, int64_t{1}, inner);
    return;
  }
  const int64_t n = shape[ndim - 1];
  for (size_t k = 0; k < K; ++k) inner[k] = strides[k][ndim - 1];
  std::vector<int64_t> idx(static_cast<size_t>(ndim), 0);
  std::array<int64_t, K> offs{};
  while (true) {
    body(offs, n, inner);
    int64_t d = ndim - 2;
    for (; d >= 0; --d) {
      ++idx[d];
      for (size_t k = 0; k < K; ++k) offs[k] += strides[k][d];
      if (idx[d] < shape[d]) break;
      for (size_t k = 0; k < K; ++k) offs[k] -= strides[k][d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace rnnkit
