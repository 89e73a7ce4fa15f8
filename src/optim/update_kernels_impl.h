// Loop bodies of the fused updates (see update_kernels.h). Deliberately
// without include guard or includes: update_kernels.cpp includes this file
// twice, inside namespace `fused` compiled for AVX2+FMA (kFusedMultiplyAdd =
// true) and inside namespace `portable` for any CPU. Option flags are
// template parameters, so each loop body is branch-free and vectorisable
// (the loops with a square root only when the file is compiled with
// -fno-math-errno: otherwise sqrt keeps its errno path, one element at a time).

// a*b + c, rounded once where PyTorch's kernels fuse it.
template <typename T>
inline T madd(T a, T b, T c) {
  if constexpr (kFusedMultiplyAdd) {
    return __builtin_fma(a, b, c);
  } else {
    return a * b + c;
  }
}
template <>
inline float madd<float>(float a, float b, float c) {
  if constexpr (kFusedMultiplyAdd) {
    return __builtin_fmaf(a, b, c);
  } else {
    return a * b + c;
  }
}

// Builtins rather than std::sqrt, which is an inline function compiled
// outside this file's target and math options (so it would not inline).
inline float square_root(float x) { return __builtin_sqrtf(x); }
inline double square_root(double x) { return __builtin_sqrt(x); }

// torch.maximum: NaN in either operand gives NaN.
template <typename T>
inline T nan_maximum(T a, T b) {
  return (a > b || a != a) ? a : b;
}

// ---- PyTorch's norm(p=2) accumulation (as measured against its AVX2 build)
inline float sum_of_squares_impl(const float* x, int64_t n) {
  constexpr int64_t kLanes = 8;
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] = madd(x[i + j], x[i + j], lanes[j]);
  float acc = lanes[0];
  for (int64_t j = 1; j < kLanes; ++j) acc = acc + lanes[j];
  // The scalar tail of PyTorch's kernel squares 4 elements at a time (rounded
  // products, added in order) and fuses the last ones.
  for (; i + 4 <= n; i += 4) {
    const float s0 = x[i] * x[i], s1 = x[i + 1] * x[i + 1], s2 = x[i + 2] * x[i + 2], s3 = x[i + 3] * x[i + 3];
    acc = acc + s0;
    acc = acc + s1;
    acc = acc + s2;
    acc = acc + s3;
  }
  for (; i < n; ++i) acc = madd(x[i], x[i], acc);
  return acc;
}

// float64 takes PyTorch's generic reduction: one sequential chain.
inline double sum_of_squares_impl(const double* x, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc = madd(x[i], x[i], acc);
  return acc;
}

// ---- SGD: kMomentum 0 = none, 1 = first step (buffer = g), 2 = running buffer.
template <typename T, bool kWeightDecay, int kMomentum, bool kNesterov>
void sgd_loop(const SgdArgs<T>& a, int64_t begin, int64_t end) {
  T* __restrict p = a.param;
  const T* __restrict g = a.grad;
  T* __restrict buf = a.momentum_buffer;
  for (int64_t i = begin; i < end; ++i) {
    T d = a.grad_sign * g[i];
    if constexpr (kWeightDecay) d = madd(p[i], a.weight_decay, d);
    if constexpr (kMomentum != 0) {
      T b;
      if constexpr (kMomentum == 1) {
        b = d;
      } else {
        b = madd(d, a.one_minus_dampening, buf[i] * a.momentum);
      }
      buf[i] = b;
      d = kNesterov ? madd(b, a.momentum, d) : b;
    }
    p[i] = madd(d, a.neg_lr, p[i]);
  }
}

template <typename T, bool kWeightDecay>
void sgd_chunk_wd(const SgdArgs<T>& a, int64_t begin, int64_t end) {
  if (!a.has_momentum) return sgd_loop<T, kWeightDecay, 0, false>(a, begin, end);
  if (a.first_step) {
    if (a.nesterov) return sgd_loop<T, kWeightDecay, 1, true>(a, begin, end);
    return sgd_loop<T, kWeightDecay, 1, false>(a, begin, end);
  }
  if (a.nesterov) return sgd_loop<T, kWeightDecay, 2, true>(a, begin, end);
  return sgd_loop<T, kWeightDecay, 2, false>(a, begin, end);
}

template <typename T>
void sgd_chunk(const SgdArgs<T>& a, int64_t begin, int64_t end) {
  if (a.has_weight_decay) return sgd_chunk_wd<T, true>(a, begin, end);
  return sgd_chunk_wd<T, false>(a, begin, end);
}

// ---- Adam / AdamW
template <typename T, bool kWeightDecay, bool kDecoupled, bool kAmsgrad>
void adam_loop(const AdamArgs<T>& a, int64_t begin, int64_t end) {
  T* __restrict p = a.param;
  const T* __restrict g = a.grad;
  T* __restrict m = a.exp_avg;
  T* __restrict v = a.exp_avg_sq;
  T* __restrict vmax = a.max_exp_avg_sq;
  for (int64_t i = begin; i < end; ++i) {
    T pi = p[i];
    if constexpr (kDecoupled) pi = pi * a.decay_scale;
    T d = a.grad_sign * g[i];
    if constexpr (kWeightDecay) d = madd(pi, a.weight_decay, d);
    const T mi = madd(d, a.one_minus_beta1, m[i] * a.beta1);
    T vi = madd(a.one_minus_beta2 * d, d, v[i] * a.beta2);
    m[i] = mi;
    v[i] = vi;
    if constexpr (kAmsgrad) {
      vi = nan_maximum(vmax[i], vi);
      vmax[i] = vi;
    }
    const T denom = square_root(vi) / a.bias_correction2_sqrt + a.eps;
    p[i] = pi + (a.neg_step_size * mi) / denom;
  }
}

template <typename T, bool kWeightDecay, bool kDecoupled>
void adam_chunk_decay(const AdamArgs<T>& a, int64_t begin, int64_t end) {
  if (a.amsgrad) return adam_loop<T, kWeightDecay, kDecoupled, true>(a, begin, end);
  return adam_loop<T, kWeightDecay, kDecoupled, false>(a, begin, end);
}

template <typename T>
void adam_chunk(const AdamArgs<T>& a, int64_t begin, int64_t end) {
  if (a.decoupled) return adam_chunk_decay<T, false, true>(a, begin, end);
  if (a.has_weight_decay) return adam_chunk_decay<T, true, false>(a, begin, end);
  return adam_chunk_decay<T, false, false>(a, begin, end);
}

// ---- RMSprop
template <typename T, bool kWeightDecay, bool kCentered, bool kMomentum>
void rmsprop_loop(const RmspropArgs<T>& a, int64_t begin, int64_t end) {
  T* __restrict p = a.param;
  const T* __restrict g = a.grad;
  T* __restrict sq = a.square_avg;
  T* __restrict ga = a.grad_avg;
  T* __restrict buf = a.momentum_buffer;
  for (int64_t i = begin; i < end; ++i) {
    T d = a.grad_sign * g[i];
    if constexpr (kWeightDecay) d = madd(p[i], a.weight_decay, d);
    const T s = madd(a.one_minus_alpha * d, d, sq[i] * a.alpha);
    sq[i] = s;
    T avg;
    if constexpr (kCentered) {
      const T mean = madd(d, a.one_minus_alpha, ga[i] * a.alpha);
      ga[i] = mean;
      avg = square_root(madd(-mean, mean, s));
    } else {
      avg = square_root(s);
    }
    avg = avg + a.eps;
    if constexpr (kMomentum) {
      const T b = buf[i] * a.momentum + d / avg;
      buf[i] = b;
      p[i] = madd(b, a.neg_lr, p[i]);
    } else {
      p[i] = p[i] + (a.neg_lr * d) / avg;
    }
  }
}

template <typename T, bool kWeightDecay, bool kCentered>
void rmsprop_chunk_centered(const RmspropArgs<T>& a, int64_t begin, int64_t end) {
  if (a.has_momentum) return rmsprop_loop<T, kWeightDecay, kCentered, true>(a, begin, end);
  return rmsprop_loop<T, kWeightDecay, kCentered, false>(a, begin, end);
}

template <typename T, bool kWeightDecay>
void rmsprop_chunk_wd(const RmspropArgs<T>& a, int64_t begin, int64_t end) {
  if (a.centered) return rmsprop_chunk_centered<T, kWeightDecay, true>(a, begin, end);
  return rmsprop_chunk_centered<T, kWeightDecay, false>(a, begin, end);
}

template <typename T>
void rmsprop_chunk(const RmspropArgs<T>& a, int64_t begin, int64_t end) {
  if (a.has_weight_decay) return rmsprop_chunk_wd<T, true>(a, begin, end);
  return rmsprop_chunk_wd<T, false>(a, begin, end);
}

// ---- Adagrad
template <typename T, bool kWeightDecay>
void adagrad_loop(const AdagradArgs<T>& a, int64_t begin, int64_t end) {
  T* __restrict p = a.param;
  const T* __restrict g = a.grad;
  T* __restrict sum = a.sum;
  for (int64_t i = begin; i < end; ++i) {
    T d = a.grad_sign * g[i];
    if constexpr (kWeightDecay) d = madd(p[i], a.weight_decay, d);
    const T s = madd(d, d, sum[i]);
    sum[i] = s;
    p[i] = p[i] + (a.neg_clr * d) / (square_root(s) + a.eps);
  }
}

template <typename T>
void adagrad_chunk(const AdagradArgs<T>& a, int64_t begin, int64_t end) {
  if (a.has_weight_decay) return adagrad_loop<T, true>(a, begin, end);
  return adagrad_loop<T, false>(a, begin, end);
}
