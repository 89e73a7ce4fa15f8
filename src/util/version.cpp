#include "rnnkit/version.h"

namespace rnnkit {
std::string version() { return RNNKIT_VERSION_STRING; }
}  // namespace rnnkit
