#pragma once
#include <string>

namespace rnnkit {
// "MAJOR.MINOR.PATCH" of the library that is linked.
std::string version();
}  // namespace rnnkit
