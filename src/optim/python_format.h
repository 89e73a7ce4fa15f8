#pragma once
// Python's repr() of a float ("-1.0", "0.001", "1e-05", "inf"), so that error
// messages read exactly as PyTorch's `"...: {}".format(value)`.
#include <string>

namespace rnnkit::optim::detail {

std::string python_float(double value);

}  // namespace rnnkit::optim::detail
