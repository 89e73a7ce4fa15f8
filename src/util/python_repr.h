#pragma once
// Python's spelling of option values, so extra_repr() strings and error
// messages read exactly as PyTorch's:
// repr(float) ("0.5", "1e-05"), True/False, tuples ("(3,)", "(3, 4)").
#include <cstdint>
#include <string>
#include <vector>

namespace rnnkit::util {

// Python's repr(float): the shortest digits that round-trip, in fixed
// notation for 1e-4 <= |v| < 1e16 (with ".0" when integral), else "1e-05".
std::string py_float(double value);
inline const char* py_bool(bool value) { return value ? "True" : "False"; }
// Python's repr(tuple) of ints.
std::string py_tuple(const std::vector<int64_t>& values);

}  // namespace rnnkit::util
