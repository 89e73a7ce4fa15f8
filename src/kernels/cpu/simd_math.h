#pragma once
// exp, sigmoid and tanh on a vector type V (simd_vec_avx512.h / simd_vec_avx2.h),
// accurate over the whole float range: a few ulp against the correctly rounded
// result, NaN in -> NaN out, subnormal results kept (tests/test_rnn_kernels.cpp
// measures the error on a sweep of every binade, bench/bench_activations on every
// float). Include only from a file compiled for V's target.
//
// exp(x):  n = round(x / ln2), r = x - n*ln2 in two parts (ln2_hi has 15
//          significant bits, so n*ln2_hi is exact for |n| < 512); e^r on
//          |r| <= ln2/2 by a degree-6 polynomial (relative error 3.1e-9, fitted
//          by iteratively reweighted least squares), times 2^n.
// sigmoid: e = exp(-|x|) never overflows; sigmoid = (x < 0 ? e : 1) / (1 + e),
//          no cancellation on either side; the division by 1 + e in [1, 2] is a
//          refined reciprocal (div_by_1_to_2), as in tanh.
// tanh:    |x| < 0.625: x + x^3 P(x^2), P of degree 4 (relative error 4.4e-9);
//          else sign(x) (1 - e) / (1 + e) with e = exp(-2|x|) <= 0.287, where
//          1 - e loses nothing.

namespace rnnkit::kernels::cpu::simd {

template <class V>
[[gnu::always_inline]] inline typename V::reg exp(typename V::reg x) {
  using reg = typename V::reg;
  // Below -104 the result is 0 even as a subnormal; above 88.8 it is +inf. NaN
  // passes both clamps (it is the second operand).
  x = V::max(V::set1(-104.0f), x);
  x = V::min(V::set1(88.8f), x);
  const reg n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  reg r = V::fnmadd(n, V::set1(0.693145751953125f), x);
  r = V::fnmadd(n, V::set1(1.42860682030941723e-6f), r);
  reg p = V::set1(1.381419084145236e-3f);
  p = V::fmadd(p, r, V::set1(8.368913788009472e-3f));
  p = V::fmadd(p, r, V::set1(4.166840719173727e-2f));
  p = V::fmadd(p, r, V::set1(1.6666519004918678e-1f));
  p = V::fmadd(p, r, V::set1(4.9999993337979276e-1f));
  p = V::fmadd(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
  return V::scale2(p, n);
}

// num / den for den in [1, 2] (or NaN): the reciprocal estimate refined by Newton,
// then one residual correction of the quotient (num - den*q is exact with FMA),
// which leaves it within about half an ulp plus 2^-27 relative of num/den,
// several times cheaper than a division.
template <class V>
[[gnu::always_inline]] inline typename V::reg div_by_1_to_2(typename V::reg num, typename V::reg den) {
  const typename V::reg r = V::recip_1_2(den);
  const typename V::reg q = V::mul(num, r);
  return V::fmadd(V::fnmadd(den, q, num), r, q);
}

template <class V>
[[gnu::always_inline]] inline typename V::reg sigmoid(typename V::reg x) {
  using reg = typename V::reg;
  const reg one = V::set1(1.0f);
  const reg e = exp<V>(V::sub(V::zero(), V::abs(x)));
  return div_by_1_to_2<V>(V::select(V::lt(x, V::zero()), e, one), V::add(one, e));
}

template <class V>
[[gnu::always_inline]] inline typename V::reg tanh(typename V::reg x) {
  using reg = typename V::reg;
  const reg one = V::set1(1.0f);
  const reg a = V::abs(x);
  const reg e = exp<V>(V::mul(a, V::set1(-2.0f)));
  const reg large = V::or_sign(div_by_1_to_2<V>(V::sub(one, e), V::add(one, e)), x);
  const reg s = V::mul(x, x);
  reg p = V::set1(-5.704985017566331e-3f);
  p = V::fmadd(p, s, V::set1(2.063908549863011e-2f));
  p = V::fmadd(p, s, V::set1(-5.373971455509312e-2f));
  p = V::fmadd(p, s, V::set1(1.3331442191817844e-1f));
  p = V::fmadd(p, s, V::set1(-3.33332819417738e-1f));
  const reg small = V::fmadd(V::mul(x, s), p, x);
  return V::select(V::lt(a, V::set1(0.625f)), small, large);
}

}  // namespace rnnkit::kernels::cpu::simd
