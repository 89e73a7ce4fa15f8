#pragma once
// Thread count of rnnkit's CPU compute. rnnkit runs on ONE OpenMP team: its own
// kernels and oneDNN's GEMM (an OpenMP build) take their threads from it, so
// nothing oversubscribes as long as the caller does not add threads of its own.
//
// The default is the environment variable RNNKIT_NUM_THREADS when it holds a
// positive integer, else OpenMP's default (OMP_NUM_THREADS, or one per core).
#include <cstdint>

namespace rnnkit {

// Threads a kernel started now would use: the configured count, or 1 when called
// from inside any OpenMP parallel region (nested regions would oversubscribe;
// this is how two directions of a bidirectional layer run side by side, one
// thread each, from an `omp parallel sections` of the caller). A region of a
// one-thread team counts too: work a kernel hands to a team of one runs on that
// thread alone, exactly as with one thread configured.
int get_num_threads();

// Sets the count for every later call, from any thread (n >= 1); n == 0 restores
// the default. Also sets OpenMP's default team size on the calling thread, so
// that other OpenMP code run from it (oneDNN included) follows the same count.
// Throws rnnkit::Error for n < 0.
void set_num_threads(int n);

}  // namespace rnnkit
