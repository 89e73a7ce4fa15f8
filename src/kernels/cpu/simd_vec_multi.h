#pragma once
// M registers of a vector type V (simd_vec_avx512.h / simd_vec_avx2.h) taken as
// one, with the part of V's interface that simd_math.h uses applied to each
// register in turn: simd::tanh<VecMulti<V, 4>> evaluates four independent tanh
// chains with their instructions interleaved, op by op.
//
// Why: an activation is a chain of about 20 dependent operations (some 85
// cycles), and the out-of-order core only overlaps the chains that fit in its
// scheduler at once. Written one vector at a time, the next vector's chain sits
// behind the current one's in program order, so a pass over many vectors ran at
// about a third of the arithmetic throughput; interleaved, each step of the
// chain has M independent instructions ready. Results are bit for bit those of
// V, register by register. Include only from a file compiled for V's target.

namespace rnnkit::kernels::cpu::simd {

template <class V, int M>
struct VecMulti {
  struct reg {
    typename V::reg r[M];
  };
  struct mask {
    typename V::mask m[M];
  };
  static constexpr int kLanes = V::kLanes * M;

  // o.r[i] = f(i) for every register.
  template <class F>
  [[gnu::always_inline]] static reg each(F&& f) {
    reg o;
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) o.r[i] = f(i);
    return o;
  }

  [[gnu::always_inline]] static reg load(const float* p) {
    return each([&](int i) { return V::load(p + i * V::kLanes); });
  }
  [[gnu::always_inline]] static void store(float* p, reg v) {
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) V::store(p + i * V::kLanes, v.r[i]);
  }
  [[gnu::always_inline]] static reg set1(float x) {
    const typename V::reg v = V::set1(x);
    return each([&](int) { return v; });
  }
  [[gnu::always_inline]] static reg zero() { return set1(0.0f); }

  [[gnu::always_inline]] static reg add(reg a, reg b) { return each([&](int i) { return V::add(a.r[i], b.r[i]); }); }
  [[gnu::always_inline]] static reg sub(reg a, reg b) { return each([&](int i) { return V::sub(a.r[i], b.r[i]); }); }
  [[gnu::always_inline]] static reg mul(reg a, reg b) { return each([&](int i) { return V::mul(a.r[i], b.r[i]); }); }
  [[gnu::always_inline]] static reg fmadd(reg a, reg b, reg c) {
    return each([&](int i) { return V::fmadd(a.r[i], b.r[i], c.r[i]); });
  }
  [[gnu::always_inline]] static reg fnmadd(reg a, reg b, reg c) {
    return each([&](int i) { return V::fnmadd(a.r[i], b.r[i], c.r[i]); });
  }
  [[gnu::always_inline]] static reg recip_1_2(reg b) { return each([&](int i) { return V::recip_1_2(b.r[i]); }); }
  [[gnu::always_inline]] static reg min(reg a, reg b) { return each([&](int i) { return V::min(a.r[i], b.r[i]); }); }
  [[gnu::always_inline]] static reg max(reg a, reg b) { return each([&](int i) { return V::max(a.r[i], b.r[i]); }); }
  [[gnu::always_inline]] static reg abs(reg a) { return each([&](int i) { return V::abs(a.r[i]); }); }
  [[gnu::always_inline]] static mask lt(reg a, reg b) {
    mask o;
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) o.m[i] = V::lt(a.r[i], b.r[i]);
    return o;
  }
  [[gnu::always_inline]] static reg select(mask m, reg a, reg b) {
    return each([&](int i) { return V::select(m.m[i], a.r[i], b.r[i]); });
  }
  [[gnu::always_inline]] static reg or_sign(reg mag, reg sign_source) {
    return each([&](int i) { return V::or_sign(mag.r[i], sign_source.r[i]); });
  }
  [[gnu::always_inline]] static reg round(reg a) { return each([&](int i) { return V::round(a.r[i]); }); }
  [[gnu::always_inline]] static reg scale2(reg x, reg n) { return each([&](int i) { return V::scale2(x.r[i], n.r[i]); }); }
};

}  // namespace rnnkit::kernels::cpu::simd
