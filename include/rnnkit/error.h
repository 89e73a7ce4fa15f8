#pragma once
// rnnkit::Error: the one exception type the library throws for bad input and
// failed operations. Messages name the operation, the argument, what was
// expected and what came, e.g.
//   "LSTM.forward: input.size(-1) must be equal to input_size. Expected 10, got 12"
#include <sstream>
#include <stdexcept>
#include <string>

namespace rnnkit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  append(os, args...);
  return os.str();
}
}  // namespace detail

}  // namespace rnnkit

// RNNKIT_CHECK(cond, parts...): throws rnnkit::Error whose message is the
// concatenation of parts when cond is false. Parts are only formatted on failure.
#define RNNKIT_CHECK(cond, ...)                                              \
  do {                                                                       \
    if (!(cond)) throw ::rnnkit::Error(::rnnkit::detail::concat(__VA_ARGS__)); \
  } while (0)
