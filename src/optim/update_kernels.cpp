// Dispatch of the fused optimizer updates: picks the AVX2+FMA build of the
// loops when the CPU has it (PyTorch's kernels fuse the same multiply-adds
// there) and splits large tensors across OpenMP threads.
#include "optim/update_kernels.h"

#include <omp.h>

#include <algorithm>

// Separate multiplies and adds must stay separate, as in PyTorch's kernels:
// only madd() fuses. (GCC contracts a*b+c in C++ whenever FMA is available,
// whatever -std says.)
#if defined(__clang__)
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif

namespace rnnkit::optim::kernels {

namespace portable {
constexpr bool kFusedMultiplyAdd = false;
#include "optim/update_kernels_impl.h"
}  // namespace portable

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RNNKIT_OPTIM_HAVE_FUSED 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace fused {
constexpr bool kFusedMultiplyAdd = true;
#include "optim/update_kernels_impl.h"
}  // namespace fused
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

namespace {

bool cpu_has_fma() {
#ifdef RNNKIT_OPTIM_HAVE_FUSED
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

// Below this many elements one thread does the whole tensor (PyTorch's
// elementwise grain size is 32768).
constexpr int64_t kParallelMinElements = 1 << 16;

template <typename Args>
void run(const Args& args, int64_t n, void (*chunk)(const Args&, int64_t, int64_t)) {
  if (n < kParallelMinElements || omp_get_max_threads() == 1) {
    chunk(args, 0, n);
    return;
  }
#pragma omp parallel
  {
    // Contiguous slices, multiples of 64 elements so vector loops stay aligned.
    const int64_t threads = omp_get_num_threads();
    const int64_t per = ((n + threads - 1) / threads + 63) / 64 * 64;
    const int64_t begin = std::min(n, per * omp_get_thread_num());
    const int64_t end = std::min(n, begin + per);
    if (begin < end) chunk(args, begin, end);
  }
}

}  // namespace

#ifdef RNNKIT_OPTIM_HAVE_FUSED
#define RNNKIT_OPTIM_PICK(name, T) (cpu_has_fma() ? &fused::name<T> : &portable::name<T>)
#else
#define RNNKIT_OPTIM_PICK(name, T) (&portable::name<T>)
#endif

template <typename T>
T sum_of_squares(const T* x, int64_t n) {
#ifdef RNNKIT_OPTIM_HAVE_FUSED
  if (cpu_has_fma()) return fused::sum_of_squares_impl(x, n);
#endif
  return portable::sum_of_squares_impl(x, n);
}

template <typename T>
void sgd_update(const SgdArgs<T>& args, int64_t n) {
  run(args, n, RNNKIT_OPTIM_PICK(sgd_chunk, T));
}
template <typename T>
void adam_update(const AdamArgs<T>& args, int64_t n) {
  run(args, n, RNNKIT_OPTIM_PICK(adam_chunk, T));
}
template <typename T>
void rmsprop_update(const RmspropArgs<T>& args, int64_t n) {
  run(args, n, RNNKIT_OPTIM_PICK(rmsprop_chunk, T));
}
template <typename T>
void adagrad_update(const AdagradArgs<T>& args, int64_t n) {
  run(args, n, RNNKIT_OPTIM_PICK(adagrad_chunk, T));
}

#define RNNKIT_OPTIM_INSTANTIATE(T)                                \
  template T sum_of_squares<T>(const T*, int64_t);                 \
  template void sgd_update<T>(const SgdArgs<T>&, int64_t);         \
  template void adam_update<T>(const AdamArgs<T>&, int64_t);       \
  template void rmsprop_update<T>(const RmspropArgs<T>&, int64_t); \
  template void adagrad_update<T>(const AdagradArgs<T>&, int64_t);
RNNKIT_OPTIM_INSTANTIATE(float)
RNNKIT_OPTIM_INSTANTIATE(double)

}  // namespace rnnkit::optim::kernels
