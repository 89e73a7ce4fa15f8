#include "support/gradcheck.h"

#include <cmath>

namespace rnnkit::testing {

::testing::AssertionResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                     std::vector<Tensor> inputs, double eps, double tol) {
  for (Tensor& t : inputs) t.set_grad(Tensor());
  Tensor out = f(inputs);
  if (out.numel() != 1) return ::testing::AssertionFailure() << "gradcheck: f must return a scalar";
  out.backward();
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    Tensor analytic = x.grad();
    if (!analytic.defined()) analytic = zeros_like(x);
    std::vector<double> ga = analytic.to_vector<double>();
    double* p = x.data_ptr<double>();
    // Inputs are contiguous leaves, so element i is p[i].
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double saved = p[i];
      double fp, fm;
      {
        NoGradGuard ng;
        p[i] = saved + eps;
        fp = f(inputs).item();
        p[i] = saved - eps;
        fm = f(inputs).item();
        p[i] = saved;
      }
      const double numeric = (fp - fm) / (2 * eps);
      const double err = std::abs(numeric - ga[i]);
      if (err > tol * std::max(1.0, std::abs(numeric)) + tol)
        return ::testing::AssertionFailure() << "gradcheck: input " << k << " element " << i << ": analytic "
                                             << ga[i] << " vs numeric " << numeric << " (|diff| " << err << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace rnnkit::testing
