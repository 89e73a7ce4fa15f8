#include "rnnkit/nn/init.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "rnnkit/autograd/node.h"

namespace rnnkit::nn::init {

double calculate_gain(Nonlinearity nonlinearity, double param) {
  switch (nonlinearity) {
    case Nonlinearity::Tanh:
      return 5.0 / 3.0;
    case Nonlinearity::ReLU:
      return std::sqrt(2.0);
    case Nonlinearity::LeakyReLU:
      return std::sqrt(2.0 / (1.0 + param * param));
    case Nonlinearity::SELU:
      return 3.0 / 4.0;
    default:
      return 1.0;  // linear, conv*, sigmoid
  }
}

Fans calculate_fan_in_and_fan_out(const Tensor& tensor) {
  RNNKIT_CHECK(tensor.defined() && tensor.dim() >= 2,
               "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions");
  int64_t receptive_field = 1;
  for (int64_t d = 2; d < tensor.dim(); ++d) receptive_field *= tensor.size(d);
  return {tensor.size(1) * receptive_field, tensor.size(0) * receptive_field};
}

namespace {

int64_t correct_fan(const Tensor& tensor, FanMode mode) {
  const Fans fans = calculate_fan_in_and_fan_out(tensor);
  return mode == FanMode::FanIn ? fans.fan_in : fans.fan_out;
}

}  // namespace

Tensor uniform_(Tensor tensor, double low, double high, Generator* generator) {
  NoGradGuard guard;
  tensor.uniform_(low, high, generator);
  return tensor;
}

Tensor normal_(Tensor tensor, double mean, double std, Generator* generator) {
  NoGradGuard guard;
  tensor.normal_(mean, std, generator);
  return tensor;
}

Tensor constant_(Tensor tensor, double value) {
  NoGradGuard guard;
  tensor.fill_(value);
  return tensor;
}

Tensor zeros_(Tensor tensor) { return constant_(tensor, 0.0); }
Tensor ones_(Tensor tensor) { return constant_(tensor, 1.0); }

Tensor eye_(Tensor tensor) {
  RNNKIT_CHECK(tensor.defined() && tensor.dim() == 2, "Only tensors with 2 dimensions are supported");
  NoGradGuard guard;
  tensor.zero_();
  const int64_t n = std::min(tensor.size(0), tensor.size(1));
  for (int64_t i = 0; i < n; ++i) tensor.select(0, i).select(0, i).fill_(1.0);
  return tensor;
}

Tensor xavier_uniform_(Tensor tensor, double gain, Generator* generator) {
  const Fans fans = calculate_fan_in_and_fan_out(tensor);
  if (tensor.numel() == 0) return tensor;
  const double std = gain * std::sqrt(2.0 / static_cast<double>(fans.fan_in + fans.fan_out));
  const double a = std::sqrt(3.0) * std;
  return uniform_(tensor, -a, a, generator);
}

Tensor xavier_normal_(Tensor tensor, double gain, Generator* generator) {
  const Fans fans = calculate_fan_in_and_fan_out(tensor);
  if (tensor.numel() == 0) return tensor;
  const double std = gain * std::sqrt(2.0 / static_cast<double>(fans.fan_in + fans.fan_out));
  return normal_(tensor, 0.0, std, generator);
}

Tensor kaiming_uniform_(Tensor tensor, double a, FanMode mode, Nonlinearity nonlinearity, Generator* generator) {
  if (tensor.defined() && tensor.numel() == 0) return tensor;  // PyTorch: "a no-op" (with a warning)
  const int64_t fan = correct_fan(tensor, mode);
  const double std = calculate_gain(nonlinearity, a) / std::sqrt(static_cast<double>(fan));
  const double bound = std::sqrt(3.0) * std;
  return uniform_(tensor, -bound, bound, generator);
}

Tensor kaiming_normal_(Tensor tensor, double a, FanMode mode, Nonlinearity nonlinearity, Generator* generator) {
  if (tensor.defined() && tensor.numel() == 0) return tensor;
  const int64_t fan = correct_fan(tensor, mode);
  const double std = calculate_gain(nonlinearity, a) / std::sqrt(static_cast<double>(fan));
  return normal_(tensor, 0.0, std, generator);
}

Tensor orthogonal_(Tensor tensor, double gain, Generator* generator) {
  RNNKIT_CHECK(tensor.defined() && tensor.dim() >= 2, "Only tensors with 2 or more dimensions are supported");
  if (tensor.numel() == 0) return tensor;
  const int64_t rows = tensor.size(0), cols = tensor.numel() / rows;
  // A: [m, n] with m >= n (the transpose when rows < cols), column-major
  // columns a_j; modified Gram-Schmidt, done twice per column for stability,
  // yields Q with R's diagonal positive, i.e. PyTorch's sign-fixed Q.
  const int64_t m = std::max(rows, cols), n = std::min(rows, cols);
  Generator& g = generator ? *generator : default_generator();
  std::vector<double> q(static_cast<size_t>(m * n));  // q[j * m + i] = Q[i, j]
  for (auto& v : q) v = g.next_normal();
  for (int64_t j = 0; j < n; ++j) {
    double* qj = &q[static_cast<size_t>(j * m)];
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t k = 0; k < j; ++k) {
        const double* qk = &q[static_cast<size_t>(k * m)];
        double dot = 0;
        for (int64_t i = 0; i < m; ++i) dot += qk[i] * qj[i];
        for (int64_t i = 0; i < m; ++i) qj[i] -= dot * qk[i];
      }
    double norm = 0;
    for (int64_t i = 0; i < m; ++i) norm += qj[i] * qj[i];
    norm = std::sqrt(norm);
    for (int64_t i = 0; i < m; ++i) qj[i] /= norm;
  }
  // W[r, c] = gain * (rows >= cols ? Q[r, c] : Q[c, r])
  std::vector<double> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      w[static_cast<size_t>(r * cols + c)] =
          gain * (rows >= cols ? q[static_cast<size_t>(c * m + r)] : q[static_cast<size_t>(r * m + c)]);
  NoGradGuard guard;
  tensor.copy_(from_vector(w, tensor.sizes()));
  return tensor;
}

}  // namespace rnnkit::nn::init
