// Readable printing of tensors, close to PyTorch's style:
//   tensor([[ 0.1000, -2.0000],
//           [ 3.0000,  4.0000]], requires_grad=True)
#include <cmath>
#include <iomanip>
#include <sstream>

#include "tensor/native.h"

namespace rnnkit {

namespace {

std::string format_value(double v, Dtype dtype, int precision) {
  std::ostringstream os;
  if (dtype == kBool) return v != 0 ? "True" : "False";
  if (dtype == kInt64) {
    os << static_cast<int64_t>(v);
    return os.str();
  }
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  os << std::fixed << std::setprecision(precision) << v;
  return os.str();
}

void print_rec(std::ostream& os, const std::vector<std::string>& cells, const Shape& shape, size_t dim,
               int64_t& pos, int width, int indent) {
  if (dim == shape.size()) {
    os << std::setw(width) << cells[pos++];
    return;
  }
  const int64_t n = shape[dim];
  const bool summarize = n > 6 && cells.size() > 1000;
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && i == 3) {
      // Skip the middle block.
      int64_t block = 1;
      for (size_t d = dim + 1; d < shape.size(); ++d) block *= shape[d];
      pos += (n - 6) * block;
      i = n - 3;
      os << "...";
      os << (dim + 1 == shape.size() ? ", " : ",\n" + std::string(indent + dim + 1, ' '));
    }
    print_rec(os, cells, shape, dim + 1, pos, width, indent);
    if (i + 1 < n) {
      if (dim + 1 == shape.size())
        os << ", ";
      else
        os << "," << std::string(shape.size() - dim - 1, '\n') << std::string(indent + dim + 1, ' ');
    }
  }
  os << "]";
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "[ undefined tensor ]";
  std::vector<double> vals = t.to_vector<double>();
  std::vector<std::string> cells;
  cells.reserve(vals.size());
  int width = 0;
  for (double v : vals) {
    cells.push_back(format_value(v, t.dtype(), 4));
    width = std::max<int>(width, static_cast<int>(cells.back().size()));
  }
  os << "tensor(";
  if (t.dim() == 0) {
    os << cells[0];
  } else {
    int64_t pos = 0;
    print_rec(os, cells, t.sizes(), 0, pos, width, 7);
  }
  if (t.dtype() == kFloat64) os << ", dtype=torch.float64";
  if (t.numel() == 0) os << ", size=" << shape_str(t.sizes());
  if (t.grad_fn())
    os << ", grad_fn=<" << t.grad_fn()->name() << ">";
  else if (t.requires_grad())
    os << ", requires_grad=True";
  return os << ")";
}

}  // namespace rnnkit
