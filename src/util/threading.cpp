#include "rnnkit/threading.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "rnnkit/error.h"

namespace rnnkit {

namespace {

// RNNKIT_NUM_THREADS when it is a positive integer, else OpenMP's default as
// seen by the first caller.
int default_num_threads() {
  if (const char* env = std::getenv("RNNKIT_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n > 0 && n < (1 << 16)) return static_cast<int>(n);
  }
  return omp_get_max_threads();
}

// The default as first seen: later omp_set_num_threads calls change what
// OpenMP reports, not what set_num_threads(0) restores.
int initial_num_threads() {
  static const int n = default_num_threads();
  return n;
}

std::atomic<int>& configured() {
  static std::atomic<int> n{initial_num_threads()};
  return n;
}

// RNNKIT_NUM_THREADS also sets the OpenMP default of the main thread, so that
// oneDNN and any OpenMP loop started from it agree with rnnkit's kernels.
const bool kAppliedEnvironment = [] {
  if (std::getenv("RNNKIT_NUM_THREADS") != nullptr) omp_set_num_threads(configured().load());
  return true;
}();

}  // namespace

int get_num_threads() {
  if (omp_get_level() > 0) return 1;  // any region, a one-thread team's included
  return configured().load(std::memory_order_relaxed);
}

void set_num_threads(int n) {
  RNNKIT_CHECK(n >= 0, "set_num_threads: the thread count must be non-negative, got ", n);
  const int value = n == 0 ? initial_num_threads() : n;
  configured().store(value);
  omp_set_num_threads(value);
}

}  // namespace rnnkit
