// functional::pad: constant padding (negative amounts crop) as one node, and
// reflect / replicate / circular as an index_select per padded dimension
// (whose backward, index_add, sums the gradients of repeated positions).
#include <algorithm>

#include "autograd/function.h"
#include "rnnkit/nn/padding.h"
#include "rnnkit/ops.h"
#include "tensor/native.h"

namespace rnnkit::nn::functional {

namespace {

using autograd::tensor_list;

// The part of a padded dimension that overlaps the input: out[dst, dst+len) = in[src, src+len).
struct Overlap {
  int64_t src, dst, len;
};

Overlap overlap(int64_t size, int64_t left, int64_t right) {
  Overlap o;
  o.src = std::max<int64_t>(-left, 0);
  o.dst = std::max<int64_t>(left, 0);
  o.len = size - o.src - std::max<int64_t>(-right, 0);
  return o;
}

Tensor constant_pad(const Tensor& input, const std::vector<int64_t>& pad, double value) {
  const int64_t nd = input.dim(), npad = static_cast<int64_t>(pad.size()) / 2;
  Shape out_shape = input.sizes();
  std::vector<Overlap> ov(static_cast<size_t>(nd), Overlap{0, 0, 0});
  for (int64_t d = 0; d < nd; ++d) ov[d] = {0, 0, input.size(d)};
  for (int64_t i = 0; i < npad; ++i) {
    const int64_t d = nd - 1 - i, left = pad[2 * i], right = pad[2 * i + 1];
    const int64_t new_size = input.size(d) + left + right;
    RNNKIT_CHECK(new_size > 0, "The input size ", input.size(d), ", plus negative padding ", left, " and ", right,
                 " resulted in a negative output size, which is invalid. Check dimension ", d, " of your input.");
    out_shape[d] = new_size;
    ov[d] = overlap(input.size(d), left, right);
  }
  // Views of the overlapping region in the input and the output.
  auto region = [ov, nd](const Tensor& t, bool of_output) {
    Tensor v = t;
    for (int64_t d = 0; d < nd; ++d) {
      const int64_t start = of_output ? ov[d].dst : ov[d].src;
      v = v.narrow(d, start, std::max<int64_t>(ov[d].len, 0));
    }
    return v;
  };
  Tensor out = full(out_shape, value, TensorOptions(input.dtype()));
  bool any = true;
  for (const auto& o : ov) any = any && o.len > 0;
  if (any) native::copy_into(region(out, true), region(input.detach(), false));
  const Shape in_shape = input.sizes();
  return autograd::record("ConstantPadNdBackward0", {input}, out,
                          [in_shape, region, any](const tensor_list& g) -> tensor_list {
                            Tensor gi = zeros(in_shape, TensorOptions(g[0].dtype()));
                            if (any) native::copy_into(region(gi, false), region(g[0], true));
                            return {gi};
                          });
}

// Source position in [0, size) of output position j of a dimension padded by `left`.
int64_t source_index(const std::string& mode, int64_t j, int64_t size, int64_t left) {
  int64_t src = j - left;
  if (mode == "reflect") {
    if (src < 0) src = -src;
    if (src >= size) src = 2 * (size - 1) - src;
  } else if (mode == "replicate") {
    src = std::min(std::max<int64_t>(src, 0), size - 1);
  } else {  // circular
    src = ((src % size) + size) % size;
  }
  return src;
}

}  // namespace

Tensor pad(const Tensor& input, const std::vector<int64_t>& pad, const std::string& mode, double value) {
  check_defined(input, "pad", "input");
  RNNKIT_CHECK(pad.size() % 2 == 0, "Padding length must be divisible by 2");
  RNNKIT_CHECK(static_cast<int64_t>(pad.size()) <= input.dim() * 2,
               "Padding length should be less than or equal to two times the input dimension but got padding length ",
               pad.size(), " and input of dimension ", input.dim());
  if (mode == "constant") return constant_pad(input, pad, value);
  RNNKIT_CHECK(mode == "reflect" || mode == "replicate" || mode == "circular", "Unrecognised padding mode ", mode);
  RNNKIT_CHECK(value == 0.0, "Padding mode \"", mode, "\" doesn't take in value argument.");
  const int64_t npad = static_cast<int64_t>(pad.size()) / 2;
  RNNKIT_CHECK(npad >= 1 && npad <= 3 && (input.dim() == npad + 1 || input.dim() == npad + 2),
               "Only 2D, 3D, 4D, 5D padding with non-constant padding are supported for now");
  Tensor out = input;
  for (int64_t i = 0; i < npad; ++i) {
    const int64_t d = input.dim() - 1 - i, size = input.size(d), left = pad[2 * i], right = pad[2 * i + 1];
    if (mode == "reflect")
      RNNKIT_CHECK(left < size && right < size && left >= 0 && right >= 0,
                   "Argument #4: Padding size should be less than the corresponding input dimension, but got: "
                   "padding (",
                   left, ", ", right, ") at dimension ", d, " of input ", shape_str(input.sizes()));
    if (mode == "circular")
      RNNKIT_CHECK(left <= size && right <= size, "Padding value causes wrapping around more than once.");
    const int64_t new_size = size + left + right;
    RNNKIT_CHECK(new_size > 0, "pad: input size ", size, " at dimension ", d, " with padding (", left, ", ", right,
                 ") gives a non-positive output size");
    std::vector<int64_t> index(static_cast<size_t>(new_size));
    for (int64_t j = 0; j < new_size; ++j) index[static_cast<size_t>(j)] = source_index(mode, j, size, left);
    out = index_select(out, d, from_vector(index));
  }
  return out;
}

}  // namespace rnnkit::nn::functional
