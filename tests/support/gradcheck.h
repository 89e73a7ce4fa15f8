#pragma once
// Finite-difference gradient check in float64: for a scalar function f of
// some inputs, compares autograd's gradients with central differences.
#include <functional>
#include <string>
#include <vector>

#include "support/oracle.h"

namespace rnnkit::testing {

// Inputs must be float64 leaves with requires_grad set. Returns failure with
// the first mismatching input and element.
::testing::AssertionResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                     std::vector<Tensor> inputs, double eps = 1e-6, double tol = 1e-7);

}  // namespace rnnkit::testing
