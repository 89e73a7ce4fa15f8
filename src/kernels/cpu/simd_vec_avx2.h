#pragma once
// 8 x float32 in a ymm register, for the kernels compiled under
// `#pragma GCC target("avx2,fma")` in rnn_simd_avx2.cpp; include nowhere else.
// Same interface as VecAvx512 (see simd_vec_avx512.h).
#include <immintrin.h>

#include <cstdint>

namespace rnnkit::kernels::cpu::simd {

struct VecAvx2 {
  using reg = __m256;
  using mask = __m256;  // all-ones lanes where true
  static constexpr int kLanes = 8;
  static constexpr int kRegisters = 16;

  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static __m256i first(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static reg load_n(const float* p, int64_t n) { return _mm256_maskload_ps(p, first(n)); }
  static void store_n(float* p, reg v, int64_t n) { _mm256_maskstore_ps(p, first(n), v); }
  static reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static reg gather(const float* p, int64_t stride, int64_t n) {
    const __m256i index = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                             _mm256_set1_epi32(static_cast<int>(stride)));
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, index, _mm256_castsi256_ps(first(n)), 4);
  }
  static void load_bf16_pairs(const uint16_t* p, reg* low, reg* high) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    *low = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    *high = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg zero() { return _mm256_setzero_ps(); }

  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  // 12-bit estimate + two Newton steps: ~2^-28 for b in [1, 2].
  static reg recip_1_2(reg b) {
    const reg one = _mm256_set1_ps(1.0f);
    reg r = _mm256_rcp_ps(b);
    r = _mm256_fmadd_ps(r, _mm256_fnmadd_ps(b, r, one), r);
    return _mm256_fmadd_ps(r, _mm256_fnmadd_ps(b, r, one), r);
  }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg abs(reg a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static mask lt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static mask gt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static reg select(mask m, reg a, reg b) { return _mm256_blendv_ps(b, a, m); }
  static reg or_sign(reg mag, reg sign_source) {
    return _mm256_or_ps(mag, _mm256_and_ps(sign_source, _mm256_set1_ps(-0.0f)));
  }
  static reg round(reg a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n in two normal factors, so that results down to the subnormals round once.
  static reg pow2(__m256i n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
  }
  static reg scale2(reg x, reg n) {
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i half = _mm256_srai_epi32(ni, 1);
    return _mm256_mul_ps(_mm256_mul_ps(x, pow2(half)), pow2(_mm256_sub_epi32(ni, half)));
  }
};

}  // namespace rnnkit::kernels::cpu::simd
