// The vectorised kernels (rnn_simd.h) for AVX2 + FMA: the template body of
// rnn_simd_impl.h compiled for this target only; rnn_simd.cpp calls it only on
// CPUs that have AVX2 and FMA. Everything after the pragma is this file's.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/bfloat16.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/rnn_simd.h"
#include "kernels/cpu/rnn_steps.h"
#include "kernels/cpu/step_scheduler.h"

#pragma GCC push_options
// GCC 12's intrinsic headers leave the "undefined" source operand of the
// unmasked forms uninitialised on purpose; its (maybe-)uninitialized warnings on
// them are noise.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC target("avx2,fma,bmi,bmi2,f16c")

#include "kernels/cpu/simd_math.h"
#include "kernels/cpu/simd_vec_multi.h"
#include "kernels/cpu/simd_vec_avx2.h"

namespace rnnkit::kernels::cpu::simd {
namespace avx2 {
using Vec = VecAvx2;
constexpr Isa kIsa = Isa::kAvx2;
#include "kernels/cpu/rnn_simd_impl.h"
}  // namespace avx2

const Kernels* avx2_kernels() { return &avx2::kKernels; }

}  // namespace rnnkit::kernels::cpu::simd

#pragma GCC diagnostic pop
#pragma GCC pop_options
