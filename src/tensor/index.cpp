// Indexing and joining (no autograd): index_select / index_add, gather /
// scatter_add, cat.
#include "tensor/iter.h"
#include "tensor/native.h"

namespace rnnkit::native {

namespace {

void check_index(const Tensor& index, const char* op) {
  check_defined(index, op, "index");
  RNNKIT_CHECK(index.dtype() == kInt64, op, ": Expected dtype int64 for index, got ",
               dtype_name(index.dtype()));
}

// [outer, n, inner] extents around dim.
void split_extents(const Shape& shape, int64_t dim, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int64_t i = 0; i < dim; ++i) *outer *= shape[i];
  for (size_t i = dim + 1; i < shape.size(); ++i) *inner *= shape[i];
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined(x, "index_select", "input");
  check_index(index, "index_select");
  RNNKIT_CHECK(index.dim() <= 1, "index_select: Index is supposed to be a vector, got shape ",
               shape_str(index.sizes()));
  const int64_t d = wrap_dim(dim, x.dim(), "index_select");
  Tensor xc = contiguous(x.dim() == 0 ? x.reshape({1}) : x);
  Tensor ic = contiguous(index.reshape({-1}));
  const int64_t n = xc.sizes()[d], k = ic.numel();
  const int64_t* ip = ic.const_data_ptr<int64_t>();
  for (int64_t j = 0; j < k; ++j)
    RNNKIT_CHECK(ip[j] >= 0 && ip[j] < n, "index_select: index out of range in self (index ", ip[j],
                 " for dimension ", d, " of size ", n, ")");
  Shape os = xc.sizes();
  os[d] = k;
  Tensor out = empty(os, TensorOptions(x.dtype()));
  int64_t outer, inner;
  split_extents(xc.sizes(), d, &outer, &inner);
  dispatch_all(x.dtype(), "index_select", [&](auto tag) {
    using T = decltype(tag);
    const T* src = xc.const_data_ptr<T>();
    T* dst = out.data_ptr<T>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < k; ++j) {
        const T* s = src + (o * n + ip[j]) * inner;
        T* t = dst + (o * k + j) * inner;
        for (int64_t i = 0; i < inner; ++i) t[i] = s[i];
      }
  });
  return out;
}

void index_add_into(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, int64_t skip) {
  RNNKIT_CHECK(out.is_contiguous() && out.dtype() == src.dtype(), "index_add: internal error, out must be contiguous "
               "and of src's dtype");
  Tensor sc = contiguous(src);
  Tensor ic = contiguous(index.reshape({-1}));
  const int64_t* ip = ic.const_data_ptr<int64_t>();
  const int64_t n = out.sizes()[dim], k = ic.numel();
  int64_t outer, inner;
  split_extents(out.sizes(), dim, &outer, &inner);
  dispatch_floating(src.dtype(), "index_add", [&](auto tag) {
    using T = decltype(tag);
    const T* s = sc.const_data_ptr<T>();
    T* o = out.data_ptr<T>();
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t j = 0; j < k; ++j) {
        if (ip[j] == skip) continue;
        const T* from = s + (a * k + j) * inner;
        T* to = o + (a * n + ip[j]) * inner;
        for (int64_t i = 0; i < inner; ++i) to[i] += from[i];
      }
  });
}

Tensor index_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src) {
  Tensor out = zeros(shape, TensorOptions(src.dtype()));
  index_add_into(out, dim, index, src);
  return out;
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined(x, "gather", "input");
  check_index(index, "gather");
  RNNKIT_CHECK(index.dim() == x.dim(), "gather: Index tensor must have the same number of dimensions as input tensor (",
               index.dim(), " vs ", x.dim(), ")");
  const int64_t d = wrap_dim(dim, x.dim(), "gather");
  for (int64_t i = 0; i < x.dim(); ++i)
    if (i != d)
      RNNKIT_CHECK(index.sizes()[i] <= x.sizes()[i], "gather: Size does not match at dimension ", i,
                   " expected index ", shape_str(index.sizes()), " to be smaller than self ",
                   shape_str(x.sizes()), " apart from dimension ", d);
  Tensor out = empty(index.sizes(), TensorOptions(x.dtype()));
  Tensor ic = contiguous(index);
  const int64_t* ip = ic.const_data_ptr<int64_t>();
  const int64_t n = x.sizes()[d];
  // Iterate over index positions; map to x with the gathered coordinate.
  Shape xs = x.strides();
  Shape coord(index.dim(), 0);
  dispatch_all(x.dtype(), "gather", [&](auto tag) {
    using T = decltype(tag);
    const T* src = static_cast<const T*>(x.const_raw_data());
    T* dst = out.data_ptr<T>();
    for (int64_t lin = 0, total = index.numel(); lin < total; ++lin) {
      int64_t rem = lin, off = 0;
      for (int64_t i = index.dim() - 1; i >= 0; --i) {
        const int64_t c = rem % index.sizes()[i];
        rem /= index.sizes()[i];
        if (i == d) {
          const int64_t g = ip[lin];
          RNNKIT_CHECK(g >= 0 && g < n, "gather: index ", g, " is out of bounds for dimension ", d,
                       " with size ", n);
          off += g * xs[i];
        } else {
          off += c * xs[i];
        }
      }
      dst[lin] = src[off];
    }
  });
  return out;
}

Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src) {
  Tensor out = zeros(shape, TensorOptions(src.dtype()));
  Tensor ic = contiguous(index);
  Tensor sc = contiguous(src);
  const int64_t* ip = ic.const_data_ptr<int64_t>();
  Shape os = out.strides();
  dispatch_floating(src.dtype(), "scatter_add", [&](auto tag) {
    using T = decltype(tag);
    const T* s = sc.const_data_ptr<T>();
    T* o = out.data_ptr<T>();
    for (int64_t lin = 0, total = ic.numel(); lin < total; ++lin) {
      int64_t rem = lin, off = 0;
      for (int64_t i = ic.dim() - 1; i >= 0; --i) {
        const int64_t c = rem % ic.sizes()[i];
        rem /= ic.sizes()[i];
        off += (i == dim ? ip[lin] : c) * os[i];
      }
      o[off] += s[lin];
    }
  });
  return out;
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  RNNKIT_CHECK(!tensors.empty(), "cat: expected a non-empty list of Tensors");
  const Tensor& first = tensors[0];
  check_defined(first, "cat", "tensors[0]");
  const int64_t d = wrap_dim(dim, first.dim(), "cat");
  RNNKIT_CHECK(first.dim() > 0, "cat: zero-dimensional tensor (at position 0) cannot be concatenated");
  Shape out_shape = first.sizes();
  out_shape[d] = 0;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const Tensor& t = tensors[k];
    check_defined(t, "cat", "tensors[k]");
    RNNKIT_CHECK(t.dtype() == first.dtype(), "cat: expected all tensors to have dtype ",
                 dtype_name(first.dtype()), ", got ", dtype_name(t.dtype()), " at position ", k);
    RNNKIT_CHECK(t.dim() == first.dim(), "cat: Tensors must have same number of dimensions: got ",
                 first.dim(), " and ", t.dim());
    for (int64_t i = 0; i < t.dim(); ++i)
      if (i != d)
        RNNKIT_CHECK(t.sizes()[i] == first.sizes()[i], "cat: Sizes of tensors must match except in dimension ",
                     d, ". Expected size ", first.sizes()[i], " but got size ", t.sizes()[i],
                     " for tensor number ", k, " in the list.");
    out_shape[d] += t.sizes()[d];
  }
  Tensor out = empty(out_shape, TensorOptions(first.dtype()));
  int64_t pos = 0;
  for (const Tensor& t : tensors) {
    copy_into(out.narrow(d, pos, t.sizes()[d]), t);
    pos += t.sizes()[d];
  }
  return out;
}

}  // namespace rnnkit::native
