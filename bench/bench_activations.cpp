// bench_activations: the vectorised exp / sigmoid / tanh of the recurrent kernels
// (src/kernels/cpu/simd_math.h) against the C library on EVERY float, for each
// instruction set this CPU runs. The reference is the double-precision libm
// result; the error is given in ulp of that result rounded to float (subnormals
// included) and as the largest relative error where the result is normal. Also
// prints the throughput of each function (thread CPU time, one core). Takes a few minutes (the reference
// dominates); --step K samples every K-th bit pattern instead.
#include <omp.h>
#include <time.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/rnn_simd.h"

namespace simd = rnnkit::kernels::cpu::simd;

namespace {

int64_t ordered(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i >= 0 ? int64_t(i) : int64_t(INT32_MIN) - int64_t(i);
}

double ref(int which, float x) {
  const double v = x;
  switch (which) {
    case 0: return std::exp(v);
    case 1: return 1.0 / (1.0 + std::exp(-v));
    default: return std::tanh(v);
  }
}

double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Error {
  int64_t max_ulp = 0;
  float max_ulp_at = 0;
  double max_rel = 0;
  int64_t nan_mismatch = 0, inexact = 0, total = 0;
};

}  // namespace

int main(int argc, char** argv) {
  uint64_t step = 1;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--step") step = std::stoull(argv[i + 1]);
  const char* names[] = {"exp", "sigmoid", "tanh"};
  std::vector<simd::Isa> isas;
  for (simd::Isa isa : {simd::Isa::kAvx512, simd::Isa::kAvx2})
    if (simd::kernels(isa) != nullptr) isas.push_back(isa);
  std::printf("every %llu-th float of 2^32, reference: libm in double\n",
              static_cast<unsigned long long>(step));
  for (int which = 0; which < 3; ++which) {
    for (simd::Isa isa : isas) {
      const simd::Kernels* k = simd::kernels(isa);
      const simd::ArrayFn fn = which == 0 ? k->exp : which == 1 ? k->sigmoid : k->tanh;
      Error total;
      const uint64_t chunk = uint64_t(1) << 20;
      const int64_t chunks = static_cast<int64_t>(((uint64_t(1) << 32) + chunk - 1) / chunk);
#pragma omp parallel
      {
        Error e;
        std::vector<float> x, y;
#pragma omp for schedule(dynamic)
        for (int64_t c = 0; c < chunks; ++c) {
          x.clear();
          const uint64_t first = (c * chunk + step - 1) / step * step;
          for (uint64_t bits = first; bits < (c + 1) * chunk; bits += step) {
            const uint32_t b32 = static_cast<uint32_t>(bits);
            float f;
            std::memcpy(&f, &b32, sizeof f);
            x.push_back(f);
          }
          y.resize(x.size());
          fn(static_cast<int64_t>(x.size()), x.data(), y.data());
          for (size_t i = 0; i < x.size(); ++i) {
            const double want_d = ref(which, x[i]);
            const float want = static_cast<float>(want_d);
            ++e.total;
            if (std::isnan(want) || std::isnan(y[i])) {
              e.nan_mismatch += std::isnan(want) != std::isnan(y[i]);
              continue;
            }
            const int64_t ulp = std::abs(ordered(y[i]) - ordered(want));
            e.inexact += ulp != 0;
            if (ulp > e.max_ulp) {
              e.max_ulp = ulp;
              e.max_ulp_at = x[i];
            }
            if (std::isnormal(want) && std::isfinite(want_d))
              e.max_rel = std::max(e.max_rel, std::abs(y[i] - want_d) / std::abs(want_d));
          }
        }
#pragma omp critical
        {
          if (e.max_ulp > total.max_ulp) {
            total.max_ulp = e.max_ulp;
            total.max_ulp_at = e.max_ulp_at;
          }
          total.max_rel = std::max(total.max_rel, e.max_rel);
          total.nan_mismatch += e.nan_mismatch;
          total.inexact += e.inexact;
          total.total += e.total;
        }
      }
      // Throughput on [-8, 8], in L1, in this thread's CPU time (so that other
      // processes on a shared machine do not count).
      std::vector<float> x(4096), y(4096);
      for (size_t i = 0; i < x.size(); ++i) x[i] = -8.f + 16.f * static_cast<float>(i) / x.size();
      const int reps = 20000;
      const double t0 = thread_seconds();
      for (int r = 0; r < reps; ++r) fn(static_cast<int64_t>(x.size()), x.data(), y.data());
      const double ns = (thread_seconds() - t0) * 1e9 / (double(reps) * x.size());
      std::printf("%-8s %-7s max %lld ulp (x = %.9g), max rel. error %.2e (normal results), "
                  "%.2f%% not correctly rounded, %lld NaN mismatches, %.3f ns/value\n",
                  names[which], simd::isa_name(isa), static_cast<long long>(total.max_ulp),
                  total.max_ulp_at, total.max_rel, 100.0 * total.inexact / std::max<int64_t>(1, total.total),
                  static_cast<long long>(total.nan_mismatch), ns);
    }
  }
  return 0;
}
