#pragma once
// 16 x float32 in a zmm register, for the kernels compiled under
// `#pragma GCC target("avx512f,...")` in rnn_simd_avx512.cpp; include nowhere
// else (the functions below only compile inside that target).
//
// Every vector type of the SIMD layer has this interface, so the math and the
// kernels (simd_math.h, rnn_simd_impl.h) are written once:
//   reg, mask (a per-lane condition), kLanes, kRegisters
//   load/store (unaligned), load_n/store_n (first n lanes, 0 < n < kLanes; the
//   others load as 0 and are not written), broadcast (*p to every lane), set1,
//   gather(p, stride, n) (lane i < n: p[i*stride], the others 0; (n-1)*stride < 2^31),
//   load_bf16_pairs (kLanes pairs of bfloat16 widened to two float vectors)
//   add sub mul div fmadd(a,b,c)=a*b+c fnmadd(a,b,c)=c-a*b min max abs,
//   recip_1_2(b) = 1/b to ~2^-28 for b in [1, 2] (NaN stays NaN)
//   lt(a,b) le gt, select(m, a, b) = m ? a : b, or_sign(mag, sign_source)
//   round (to nearest even), scale2(x, n) = x * 2^n for integral float n in
//   [-252, 254], including results that underflow to subnormals
#include <immintrin.h>

#include <cstdint>

namespace rnnkit::kernels::cpu::simd {

struct VecAvx512 {
  using reg = __m512;
  using mask = __mmask16;
  static constexpr int kLanes = 16;
  static constexpr int kRegisters = 32;

  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static mask first(int64_t n) { return static_cast<mask>((1u << n) - 1u); }
  static reg load_n(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store_n(float* p, reg v, int64_t n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
  // Lane i < n: p[i * stride]; the others 0 (not read). (n - 1) * stride < 2^31.
  static reg gather(const float* p, int64_t stride, int64_t n) {
    const __m512i index = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(static_cast<int>(stride)));
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), first(n), index, p, 4);
  }
  // kLanes pairs of bfloat16 (lane i: p[2i] low, p[2i+1] high) widened to two
  // float vectors, exactly: the low ones shifted into place, the high ones masked.
  static void load_bf16_pairs(const uint16_t* p, reg* low, reg* high) {
    const __m512i v = _mm512_loadu_si512(p);
    *low = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    *high = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg zero() { return _mm512_setzero_ps(); }

  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  // 1/b to about 2^-28 for b in [1, 2] (or NaN): 14-bit estimate + one Newton step.
  static reg recip_1_2(reg b) {
    const reg r = _mm512_rcp14_ps(b);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(b, r, _mm512_set1_ps(1.0f)), r);
  }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }
  // min/max return the second operand when either is NaN: callers put the value
  // that may be NaN second.
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg abs(reg a) { return _mm512_abs_ps(a); }
  static mask lt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static mask gt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static reg select(mask m, reg a, reg b) { return _mm512_mask_blend_ps(m, b, a); }
  static reg or_sign(reg mag, reg sign_source) {
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(sign_source), _mm512_set1_epi32(INT32_MIN));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(mag), sign));
  }
  static reg round(reg a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg scale2(reg x, reg n) { return _mm512_scalef_ps(x, n); }
};

}  // namespace rnnkit::kernels::cpu::simd
