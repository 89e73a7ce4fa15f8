// Template body of the vectorised kernels (rnn_simd.h), included once per
// instruction set by rnn_simd_<isa>.cpp after its `#pragma GCC target` and the
// vector type `Vec`, inside namespace rnnkit::kernels::cpu::simd::<isa>. No
// include guard on purpose; include nowhere else.
//
// Small-batch forward (no projection; N <= 8, up to kSmallBatchMax for the LSTM
// and the GRU with AVX-512 or when the product is small: rnn.cpp,
// small_batch_path). Per step the
// recurrent product is N rows times W_hh: a matrix-vector product whose cost is
// reading W_hh, so the aim is to read it from the nearest cache and to spend
// nothing else per step. One OpenMP region covers the whole sequence; group g
// (normally thread g) owns a fixed range of 16-unit blocks of the hidden state,
// for ALL gates of those units, for every step:
//   - first it computes the input projection of its units for all steps (one
//     GEMM per gate block) and packs its rows of W_hh ([K][G][16] per block, so
//     that the product runs along k with the 16 units of all G gates in
//     registers and no horizontal sums; [G][K][16] where the passes take the
//     gates a few at a time); it then reads only that slice, which stays in the
//     core's own L2 (or L1) across steps (with several rows and a large slice
//     the product requests its weights ahead: recurrent_prefetch_bytes);
//   - per step it completes the pre-activations of its units and runs the fused
//     pointwise pass on them while they are in L1, writing its part of h (and c);
//   - threads meet once per step (StepScheduler), since the next step needs all
//     of h; a thread whose partner is late (descheduled) runs its part for it.
// Blocks are walked in alternating order on alternate steps, so that the blocks
// a step touched last (still in cache) are the first the next step reads. A
// group whose slice streams from L3 anyway (SmallBatchForward::split_min_bytes)
// lets a thread done with its own group run its last blocks when it is behind.

using reg = Vec::reg;

// ---------------------------------------------------------------------------
// Vector loop helpers: full vectors, then one partial vector for the tail.

template <class F>
inline void for_vectors(int64_t n, F&& f) {
  int64_t j = 0;
  // Two vectors per iteration, so that the scheduler interleaves their long
  // chains of dependent activation steps.
  for (; j + 2 * Vec::kLanes <= n; j += 2 * Vec::kLanes) {
    f(j, int64_t(Vec::kLanes));
    f(j + Vec::kLanes, int64_t(Vec::kLanes));
  }
  for (; j + Vec::kLanes <= n; j += Vec::kLanes) f(j, int64_t(Vec::kLanes));
  if (j < n) f(j, n - j);
}

inline reg ld(const float* p, int64_t cnt) {
  return cnt == Vec::kLanes ? Vec::load(p) : Vec::load_n(p, cnt);
}

inline void st(float* p, reg v, int64_t cnt) {
  if (cnt == Vec::kLanes)
    Vec::store(p, v);
  else
    Vec::store_n(p, v, cnt);
}

inline reg one_minus(reg v) { return Vec::sub(Vec::set1(1.0f), v); }

// Vectors whose activation chains go interleaved (simd_vec_multi.h): four
// (measured best on Zen 3 among 2, 3, 4 and 6: more spill the chains'
// temporaries), and two for a row's last whole pair.
using Multi = VecMulti<Vec, 4>;
using Multi2 = VecMulti<Vec, 2>;

// Loads and stores of cnt lanes for W = Vec, of all of W's lanes for W = Multi.
template <class W>
inline typename W::reg ld(const float* p, int64_t cnt) {
  if constexpr (std::is_same_v<W, Vec>)
    return ld(p, cnt);
  else
    return W::load(p);
}
template <class W>
inline void st(float* p, typename W::reg v, int64_t cnt) {
  if constexpr (std::is_same_v<W, Vec>)
    st(p, v, cnt);
  else
    W::store(p, v);
}

// f(W(), j, cnt) over [0, n): W = Multi for whole groups of Multi's vectors, then
// Multi2 for a pair of whole vectors, then Vec for the last vector or part of
// one, so that one generic body serves all three.
template <class F>
inline void for_chains(int64_t n, F&& f) {
  int64_t j = 0;
  for (; j + Multi::kLanes <= n; j += Multi::kLanes) f(Multi(), j, int64_t(Multi::kLanes));
  for (; j + Multi2::kLanes <= n; j += Multi2::kLanes) f(Multi2(), j, int64_t(Multi2::kLanes));
  for (; j < n; j += Vec::kLanes) f(Vec(), j, std::min<int64_t>(Vec::kLanes, n - j));
}

// ---------------------------------------------------------------------------
// Arrays (tests, tools).

void exp_array(int64_t n, const float* x, float* y) {
  for_chains(n, [&](auto w, int64_t j, int64_t c) {
    using W = decltype(w);
    st<W>(y + j, simd::exp<W>(ld<W>(x + j, c)), c);
  });
}
void sigmoid_array(int64_t n, const float* x, float* y) {
  for_chains(n, [&](auto w, int64_t j, int64_t c) {
    using W = decltype(w);
    st<W>(y + j, simd::sigmoid<W>(ld<W>(x + j, c)), c);
  });
}
void tanh_array(int64_t n, const float* x, float* y) {
  for_chains(n, [&](auto w, int64_t j, int64_t c) {
    using W = decltype(w);
    st<W>(y + j, simd::tanh<W>(ld<W>(x + j, c)), c);
  });
}

// ---------------------------------------------------------------------------
// Pointwise passes; see rnn_pointwise.h for the math and the buffer contents.

template <bool Relu>
void elman_forward(int64_t n, int64_t H, float* gates, const float* bias, const float*,
                   const float*, float*, float* h, bool training) {
  for_chains(n, [&](auto w, int64_t j, int64_t c) {
    using W = decltype(w);
    const auto pre = W::add(ld<W>(gates + j, c), ld<W>(bias + j, c));
    // Relu keeps a NaN (it is not below 0), as PyTorch does.
    const auto v = Relu ? W::select(W::lt(pre, W::zero()), W::zero(), pre) : simd::tanh<W>(pre);
    st<W>(h + j, v, c);
    if (training) st<W>(gates + j, v, c);
  });
}

template <bool Relu>
void elman_backward(int64_t n, int64_t H, const float* gates, const float*, const float*,
                    const float*, const float* dh_a, const float* dh_b, float*, float*,
                    float* dgates) {
  for_vectors(n, [&](int64_t j, int64_t c) {
    const reg h = ld(gates + j, c);
    const reg dh = Vec::add(ld(dh_a + j, c), ld(dh_b + j, c));
    const reg dg = Relu ? Vec::select(Vec::gt(h, Vec::zero()), dh, Vec::zero())
                        : Vec::mul(dh, Vec::fnmadd(h, h, Vec::set1(1.0f)));
    st(dgates + j, dg, c);
  });
}

// The cells' forward passes go in two sweeps over interleaved chains (Multi):
// first every gate activation that depends on the pre-activations alone (stored
// in place), then what depends on those (the LSTM's tanh(c) needs three of
// them). The results are the same bits as one vector at a time in one sweep,
// which this replaced. Pass alone on Zen 3 (data in L1), TSC cycles for 64 /
// 1024 units, before -> after: LSTM 858 -> 612 / 13671 -> 9800, GRU 588 -> 392 /
// 9579 -> 6345, Elman tanh 172 -> 123 / 2793 -> 2083. Whole forwards on two
// cores: LSTM H = 512 N = 64 -3 to -4%, GRU -1.5 to -2%; no change at H = 128
// N = 1, whose step the recurrent product bounds.
//
// Two gate rows at once, (ga, ba) and (gb, bb): g[j] = tanh(g[j] + b[j]) where
// that row's Tanh is set, else sigmoid(g[j] + b[j]), for j < n. The rows'
// chains are independent, so a pass over few units (a thread's part of a small
// layer: one group of Multi's vectors) does not wait out one activation's
// latency per row. Each row's loads come before either store: a sweep that
// stored each row before loading the next made, with rows 4 KiB apart (H =
// 1024), each load wait on the store to the row before (same address bits
// below 4 KiB). The same bits as one row at a time. Forward with packed
// weights on two Xeon cores, in-process A/B against one row per pass:
// lstm-128-1 0.98-0.99, gru-128-1 0.98-0.99, lstm-128-4 0.97-0.98; GEMM-path
// rows (lstm-512-64, lstm-1024-64, gru-512-64) level. All four LSTM gates in
// one pass gained nothing more.
template <bool TanhA, bool TanhB>
void activate_pair_in_place(int64_t n, float* ga, const float* ba, float* gb, const float* bb) {
  for_chains(n, [&](auto w, int64_t j, int64_t cnt) {
    using W = decltype(w);
    const auto pa = W::add(ld<W>(ga + j, cnt), ld<W>(ba + j, cnt));
    const auto pb = W::add(ld<W>(gb + j, cnt), ld<W>(bb + j, cnt));
    const auto a = TanhA ? simd::tanh<W>(pa) : simd::sigmoid<W>(pa);
    const auto b = TanhB ? simd::tanh<W>(pb) : simd::sigmoid<W>(pb);
    st<W>(ga + j, a, cnt);
    st<W>(gb + j, b, cnt);
  });
}

void lstm_forward(int64_t n, int64_t H, float* gates, const float* bias, const float*,
                  const float* c_prev, float* c, float* h, bool) {
  float* gi = gates;
  float* gf = gates + H;
  float* gg = gates + 2 * H;
  float* go = gates + 3 * H;
  activate_pair_in_place<false, false>(n, gi, bias, gf, bias + H);
  activate_pair_in_place<true, false>(n, gg, bias + 2 * H, go, bias + 3 * H);
  for_chains(n, [&](auto w, int64_t j, int64_t cnt) {
    using W = decltype(w);
    const auto c_new =
        W::fmadd(ld<W>(gf + j, cnt), ld<W>(c_prev + j, cnt), W::mul(ld<W>(gi + j, cnt), ld<W>(gg + j, cnt)));
    st<W>(c + j, c_new, cnt);
    st<W>(h + j, W::mul(ld<W>(go + j, cnt), simd::tanh<W>(c_new)), cnt);
  });
}

void lstm_backward(int64_t n, int64_t H, const float* gates, const float*, const float* c_prev,
                   const float* c, const float* dh_a, const float* dh_b, float*, float* dc,
                   float* dgates) {
  // Multi: tanh(c) is the one long chain here.
  for_chains(n, [&](auto w, int64_t j, int64_t cnt) {
    using W = decltype(w);
    const auto one = W::set1(1.0f);
    const auto i = ld<W>(gates + j, cnt), f = ld<W>(gates + H + j, cnt);
    const auto g = ld<W>(gates + 2 * H + j, cnt), o = ld<W>(gates + 3 * H + j, cnt);
    const auto tanh_c = simd::tanh<W>(ld<W>(c + j, cnt));
    const auto dh = W::add(ld<W>(dh_a + j, cnt), ld<W>(dh_b + j, cnt));
    const auto dc_total = W::fmadd(W::mul(dh, o), W::fnmadd(tanh_c, tanh_c, one), ld<W>(dc + j, cnt));
    st<W>(dgates + j, W::mul(W::mul(dc_total, g), W::mul(i, W::sub(one, i))), cnt);
    st<W>(dgates + H + j, W::mul(W::mul(dc_total, ld<W>(c_prev + j, cnt)), W::mul(f, W::sub(one, f))),
          cnt);
    st<W>(dgates + 2 * H + j, W::mul(W::mul(dc_total, i), W::fnmadd(g, g, one)), cnt);
    st<W>(dgates + 3 * H + j, W::mul(W::mul(dh, tanh_c), W::mul(o, W::sub(one, o))), cnt);
    st<W>(dc + j, W::mul(dc_total, f), cnt);
  });
}

void gru_forward(int64_t n, int64_t H, float* gates, const float* bias, const float* h_prev,
                 const float*, float*, float* h, bool training) {
  float* gr = gates;
  float* gz = gates + H;
  float* hn = gates + 2 * H;
  float* gn = gates + 3 * H;
  activate_pair_in_place<false, false>(n, gr, bias, gz, bias + H);
  for_chains(n, [&](auto w, int64_t j, int64_t cnt) {
    using W = decltype(w);
    const auto hn_b = W::add(ld<W>(hn + j, cnt), ld<W>(bias + 2 * H + j, cnt));
    const auto xn_b = W::add(ld<W>(gn + j, cnt), ld<W>(bias + 3 * H + j, cnt));
    const auto nv = simd::tanh<W>(W::fmadd(ld<W>(gr + j, cnt), hn_b, xn_b));
    // (h - n) * z + n: PyTorch's evaluation order of (1 - z) * n + z * h.
    st<W>(h + j, W::fmadd(W::sub(ld<W>(h_prev + j, cnt), nv), ld<W>(gz + j, cnt), nv), cnt);
    if (training) {
      st<W>(hn + j, hn_b, cnt);
      st<W>(gn + j, nv, cnt);
    }
  });
}

void gru_backward(int64_t n, int64_t H, const float* gates, const float* h_prev, const float*,
                  const float*, const float* dh_a, const float* dh_b, float* dh_direct, float*,
                  float* dgates) {
  for_vectors(n, [&](int64_t j, int64_t cnt) {
    const reg r = ld(gates + j, cnt), z = ld(gates + H + j, cnt);
    const reg hn = ld(gates + 2 * H + j, cnt), nv = ld(gates + 3 * H + j, cnt);
    const reg dh = Vec::add(ld(dh_a + j, cnt), ld(dh_b + j, cnt));
    const reg dn_pre = Vec::mul(Vec::mul(dh, one_minus(z)), Vec::fnmadd(nv, nv, Vec::set1(1.0f)));
    const reg dz = Vec::mul(dh, Vec::sub(ld(h_prev + j, cnt), nv));
    st(dgates + j, Vec::mul(Vec::mul(dn_pre, hn), Vec::mul(r, one_minus(r))), cnt);
    st(dgates + H + j, Vec::mul(dz, Vec::mul(z, one_minus(z))), cnt);
    st(dgates + 2 * H + j, Vec::mul(dn_pre, r), cnt);
    st(dgates + 3 * H + j, dn_pre, cnt);
    st(dh_direct + j, Vec::mul(dh, z), cnt);
  });
}

// ---------------------------------------------------------------------------
// Small-batch forward.

// Vectors per 16-unit block.
constexpr int kSub = static_cast<int>(kPackBlock) / Vec::kLanes;

// Rows of the batch handled per pass over a block's weights: each weight loaded
// feeds that many FMAs, and rows beyond it cost another pass over the weights.
constexpr int kMaxBatchPerPass = 4;

// Gates handled per pass for NB rows: the most (dividing G) whose accumulators
// (NB * gates * kSub) leave four registers free. With 16-lane vectors all G
// gates fit for 4 rows; with 8-lane ones (two vectors per 16-unit block, 16
// registers) 4 rows go gate by gate, so that each weight loaded still feeds 4
// FMAs (before, such steps took one row per pass, each weight feeding one FMA
// and W_hh read once per row). Forward with pre-packed weights on two Zen 3
// cores, us per step, before -> after (the loops' unroll pragmas included, which
// keep the accumulators in registers): LSTM H = 512 N = 2 105 -> 86, N = 4
// 156-161 -> 125-132, N = 8 306 -> 258; GRU H = 512 N = 4 146 -> 93, H = 128
// N = 4 10.4 -> 6.9; Elman H = 512 N = 4 46 -> 28.
constexpr int gates_per_pass(int G, int NB) {
  for (int gp = G; gp > 1; --gp)
    if (G % gp == 0 && NB * gp * kSub <= Vec::kRegisters - 4) return gp;
  return 1;
}

// Independent accumulator sets along k, so that enough FMA chains are in flight.
constexpr int k_splits(int GP, int NB) {
  const int per_set = NB * GP * kSub;
  int ks = 8 / per_set;
  while (ks > 1 && ks * per_set > Vec::kRegisters - 4) --ks;
  return ks < 1 ? 1 : ks;
}

// Lanes of sub-vector s that hold units of a block with cnt units (0 to kLanes).
inline int64_t sub_lanes(int64_t cnt, int s) {
  return std::min<int64_t>(std::max<int64_t>(cnt - s * Vec::kLanes, 0), Vec::kLanes);
}

// Accumulator set 0 starts from the gates rows (the input projection), the
// other KS - 1 sets from zero. Gates [g0, g0 + GP).
template <int KS, int NB, int GP>
inline void load_accumulators(reg (&acc)[KS][NB][GP][kSub], float* const* g_rows, int64_t H, int g0,
                              int64_t cnt) {
#pragma GCC unroll 16
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 16
    for (int g = 0; g < GP; ++g)
#pragma GCC unroll 16
      for (int s = 0; s < kSub; ++s) {
        const int64_t c = sub_lanes(cnt, s);
        acc[0][b][g][s] = c > 0 ? ld(g_rows[b] + (g0 + g) * H + s * Vec::kLanes, c) : Vec::zero();
#pragma GCC unroll 16
        for (int q = 1; q < KS; ++q) acc[q][b][g][s] = Vec::zero();
      }
}

// The sum of the KS sets back into the gates rows.
template <int KS, int NB, int GP>
inline void store_accumulators(reg (&acc)[KS][NB][GP][kSub], float* const* g_rows, int64_t H, int g0,
                               int64_t cnt) {
#pragma GCC unroll 16
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 16
    for (int g = 0; g < GP; ++g)
#pragma GCC unroll 16
      for (int s = 0; s < kSub; ++s) {
        reg sum = acc[0][b][g][s];
#pragma GCC unroll 16
        for (int q = 1; q < KS; ++q) sum = Vec::add(sum, acc[q][b][g][s]);
        const int64_t c = sub_lanes(cnt, s);
        if (c > 0) st(g_rows[b] + (g0 + g) * H + s * Vec::kLanes, sum, c);
      }
}

// For NB rows b and the GP gates g0 <= g < g0 + GP: gates_b[g*H + u] += sum_k
// W_hh[g*H + j0 + u, k] * h_b[k] for the cnt units u of one block (j0 is folded
// into g_rows); wp is the block's packed weights, [K][G][16], or [G][K][16]
// with GM (gate-major; see Kernels::gate_major), for K columns. With prefetch
// > 0, each gate's stream is requested that many elements ahead into L1
// (recurrent_prefetch_bytes).
// KSForce > 0 sets the accumulator sets (elman_pair_rows).
template <int G, int GP, int NB, bool GM, int KSForce = 0>
inline void recurrent_block(const float* wp, int64_t K, int64_t H, const float* const* h,
                            float* const* g_rows, int g0, int64_t cnt, int64_t prefetch) {
  constexpr int KS = KSForce > 0 ? KSForce : k_splits(GP, NB);
  reg acc[KS][NB][GP][kSub];
  load_accumulators(acc, g_rows, H, g0, cnt);
  // Elements between consecutive k, and between consecutive gates.
  const int64_t k_step = GM ? kPackBlock : G * kPackBlock, g_step = GM ? K * kPackBlock : kPackBlock;
  wp += g0 * g_step;
  // acc[q] += W[kk] h[kk] for every row, gate and sub-vector.
  const auto step = [&](int q, int64_t kk) __attribute__((always_inline)) {
    const float* w = wp + kk * k_step;
    if (prefetch > 0)
#pragma GCC unroll 16
      for (int g = 0; g < GP; ++g)
        _mm_prefetch(reinterpret_cast<const char*>(w + g * g_step + prefetch), _MM_HINT_T0);
    reg hb[NB];
#pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) hb[b] = Vec::broadcast(h[b] + kk);
#pragma GCC unroll 16
    for (int g = 0; g < GP; ++g)
#pragma GCC unroll 16
      for (int s = 0; s < kSub; ++s) {
        const reg wv = Vec::load(w + g * g_step + s * Vec::kLanes);
#pragma GCC unroll 16
        for (int b = 0; b < NB; ++b) acc[q][b][g][s] = Vec::fmadd(wv, hb[b], acc[q][b][g][s]);
      }
  };
  int64_t k = 0;
  for (; k + KS <= K; k += KS)
#pragma GCC unroll 16
    for (int q = 0; q < KS; ++q) step(q, k + q);
  for (; k < K; ++k) step(0, k);
  store_accumulators(acc, g_rows, H, g0, cnt);
}

// The same product from bfloat16 weights packed in pairs along k
// ([K/2][G][16][2], or [G][K/2][16][2] with GM; see pack_recurrent_bf16): one
// load and one shift or mask per 16 weights; h and the sums stay float. Two
// accumulator sets (k even, k odd) when registers allow, for enough FMA chains.
template <int G, int GP, int NB, bool GM>
inline void recurrent_block(const uint16_t* wp, int64_t K, int64_t H, const float* const* h,
                            float* const* g_rows, int g0, int64_t cnt, int64_t prefetch) {
  constexpr int KS = 2 * NB * GP * kSub <= Vec::kRegisters - 8 ? 2 : 1;
  reg acc[KS][NB][GP][kSub];
  load_accumulators(acc, g_rows, H, g0, cnt);
  // Values between consecutive pairs of k, and between consecutive gates.
  const int64_t k_step = (GM ? 1 : G) * kPackBlock * 2, g_step = GM ? (K + 1) / 2 * kPackBlock * 2 : kPackBlock * 2;
  wp += g0 * g_step;
  const int64_t pairs = K / 2;
  constexpr int kAcc = KS * NB * GP * kSub;
  // Both halves of a pair at once needs 2 * NB broadcasts; the even half first,
  // holding the odd weights for the second, needs NB and GP * kSub weights.
  // Whichever fits the registers (4 rows of one gate with 8-lane vectors need
  // the second: 18 registers spilled in the first).
  constexpr bool kHalves = kAcc + 2 * NB + 2 > Vec::kRegisters && kAcc + NB + GP * kSub + 1 <= Vec::kRegisters;
  for (int64_t kp = 0; kp < pairs; ++kp) {
    const uint16_t* w = wp + kp * k_step;
    if (prefetch > 0)
#pragma GCC unroll 16
      for (int g = 0; g < GP; ++g)
        _mm_prefetch(reinterpret_cast<const char*>(w + g * g_step + prefetch), _MM_HINT_T0);
    if constexpr (kHalves) {
      reg odd[GP][kSub], hb[NB];
#pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) hb[b] = Vec::broadcast(h[b] + 2 * kp);
#pragma GCC unroll 16
      for (int g = 0; g < GP; ++g)
#pragma GCC unroll 16
        for (int s = 0; s < kSub; ++s) {
          reg w0;
          Vec::load_bf16_pairs(w + g * g_step + s * Vec::kLanes * 2, &w0, &odd[g][s]);
#pragma GCC unroll 16
          for (int b = 0; b < NB; ++b) acc[0][b][g][s] = Vec::fmadd(w0, hb[b], acc[0][b][g][s]);
        }
#pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) hb[b] = Vec::broadcast(h[b] + 2 * kp + 1);
#pragma GCC unroll 16
      for (int g = 0; g < GP; ++g)
#pragma GCC unroll 16
        for (int s = 0; s < kSub; ++s)
#pragma GCC unroll 16
          for (int b = 0; b < NB; ++b) acc[KS - 1][b][g][s] = Vec::fmadd(odd[g][s], hb[b], acc[KS - 1][b][g][s]);
    } else {
      reg h0[NB], h1[NB];
#pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) {
        h0[b] = Vec::broadcast(h[b] + 2 * kp);
        h1[b] = Vec::broadcast(h[b] + 2 * kp + 1);
      }
#pragma GCC unroll 16
      for (int g = 0; g < GP; ++g)
#pragma GCC unroll 16
        for (int s = 0; s < kSub; ++s) {
          reg w0, w1;
          Vec::load_bf16_pairs(w + g * g_step + s * Vec::kLanes * 2, &w0, &w1);
#pragma GCC unroll 16
          for (int b = 0; b < NB; ++b) {
            acc[0][b][g][s] = Vec::fmadd(w0, h0[b], acc[0][b][g][s]);
            acc[KS - 1][b][g][s] = Vec::fmadd(w1, h1[b], acc[KS - 1][b][g][s]);
          }
        }
    }
  }
  if (K % 2 == 1) {  // the last k alone; its pair's other half is zero
    const uint16_t* w = wp + pairs * k_step;
#pragma GCC unroll 16
    for (int g = 0; g < GP; ++g)
#pragma GCC unroll 16
      for (int s = 0; s < kSub; ++s) {
        reg w0, w1;
        Vec::load_bf16_pairs(w + g * g_step + s * Vec::kLanes * 2, &w0, &w1);
#pragma GCC unroll 16
        for (int b = 0; b < NB; ++b)
          acc[0][b][g][s] = Vec::fmadd(w0, Vec::broadcast(h[b] + K - 1), acc[0][b][g][s]);
      }
  }
  store_accumulators(acc, g_rows, H, g0, cnt);
}

#ifdef RNNKIT_SIMD_BF16_DOT
// The bfloat16 products (PackedPrecision::kBFloat16Products) on a CPU with
// AVX512_BF16: the weights as the overload above takes them and h rounded to
// bfloat16 in the same pairs, hp[b][kp] = (h_b[2kp], h_b[2kp + 1]) in one
// 32-bit lane (round_pairs; for K odd the last pair's second half is 0).
// Each vdpbf16ps adds two exact products per lane to the float sum: 32
// multiply-adds an instruction, twice an FMA's (one thread of the 2026-12-08
// Zen 4, a thread's slice of LSTM H = 512 at 4 rows: 18 us against 36 for the
// float32 and the widened bfloat16 products). The instruction takes
// subnormal inputs and sums as zero. Only this function and round_pairs carry
// the AVX512_BF16 target, so that nothing else in the file may use it; they
// run only where the CPU has it (rnn_simd.h, bf16_dot_hardware).
template <int G, int GP, int NB, bool GM>
__attribute__((target("avx512bf16"), noinline)) void recurrent_block_dot(
    const uint16_t* wp, int64_t K, int64_t H, const uint32_t* const* hp, float* const* g_rows, int g0,
    int64_t cnt, int64_t prefetch) {
  static_assert(kSub == 1, "16-lane vectors");
  constexpr int KS = k_splits(GP, NB);
  reg acc[KS][NB][GP][kSub];
  load_accumulators(acc, g_rows, H, g0, cnt);
  const int64_t k_step = (GM ? 1 : G) * kPackBlock * 2, g_step = GM ? (K + 1) / 2 * kPackBlock * 2 : kPackBlock * 2;
  wp += g0 * g_step;
  const int64_t pairs = (K + 1) / 2;
  const auto step = [&](int q, int64_t kp) __attribute__((always_inline)) {
    const uint16_t* w = wp + kp * k_step;
    if (prefetch > 0)
#pragma GCC unroll 16
      for (int g = 0; g < GP; ++g)
        _mm_prefetch(reinterpret_cast<const char*>(w + g * g_step + prefetch), _MM_HINT_T0);
    __m512bh hb[NB];
#pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) hb[b] = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(hp[b][kp])));
#pragma GCC unroll 16
    for (int g = 0; g < GP; ++g) {
      const __m512bh wv = reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + g * g_step));
#pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) acc[q][b][g][0] = _mm512_dpbf16_ps(acc[q][b][g][0], wv, hb[b]);
    }
  };
  int64_t kp = 0;
  for (; kp + KS <= pairs; kp += KS)
#pragma GCC unroll 16
    for (int q = 0; q < KS; ++q) step(q, kp + q);
  for (; kp < pairs; ++kp) step(0, kp);
  store_accumulators(acc, g_rows, H, g0, cnt);
}

template <int G, int GP, int NB, bool GM>
inline void recurrent_block(const uint16_t* wp, int64_t K, int64_t H, const uint32_t* const* hp,
                            float* const* g_rows, int g0, int64_t cnt, int64_t prefetch) {
  recurrent_block_dot<G, GP, NB, GM>(wp, K, H, hp, g_rows, g0, cnt, prefetch);
}

// h[0, K) rounded to bfloat16 (to nearest even) in pairs for recurrent_block_dot:
// out[0, (K + 1) / 2), the last pair's second half 0 for K odd.
__attribute__((target("avx512bf16"), noinline)) void round_pairs(const float* h, int64_t K, uint32_t* out) {
  for (int64_t k = 0; k < K; k += 32) {
    const int64_t n0 = std::min<int64_t>(16, K - k), n1 = std::max<int64_t>(0, std::min<int64_t>(16, K - k - 16));
    const __m512 lo = Vec::load_n(h + k, n0), hi = n1 > 0 ? Vec::load_n(h + k + 16, n1) : Vec::zero();
    const __m512i v = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
    _mm512_mask_storeu_epi32(out + k / 2, Vec::first(std::min<int64_t>(16, (K - k + 1) / 2)), v);
  }
}
#endif

// NB rows through all G gates, gates_per_pass(G, NB) at a time. Where that is
// fewer than G, the weights are packed gate-major (Kernels::gate_major decides
// from the batch's widest pass, and narrower ones take at least as many gates),
// so that each pass streams its gates' contiguous weights. Such passes first
// went over k-major weights in 64-step chunks, whose weights stayed in L1 from
// the first gate's pass to the last; but each pass then read one 64-byte line
// in four, which the prefetchers served poorly: 7.2-8.3 cycles per 8 FMAs
// against 4.4 for contiguous weights, measured alone with the weights in L3 on
// two Zen 3 cores. Whole steps with the input projection, us: LSTM H = 512 N =
// 4 128-144 -> 104-114, N = 2 88-91 -> 69-71, GRU H = 512 N = 4 91-103 -> 77-88.
// One-row passes (all gates at once) stay k-major: one stream is 2-3% faster
// there than four.
template <int G, int NB, bool GM, class W, class HT>
inline void recurrent_block_gates(const W* wp, int64_t K, int64_t H, const HT* const* h,
                                  float* const* g_rows, int64_t cnt, int64_t prefetch) {
  constexpr int GP = gates_per_pass(G, NB);
  static_assert(GP == G || GM, "k-major passes take all gates");
  for (int g0 = 0; g0 < G; g0 += GP) recurrent_block<G, GP, NB, GM>(wp, K, H, h, g_rows, g0, cnt, prefetch);
}

// Rows one pass over k-major weights takes: the most that all G gates fit.
constexpr int all_gates_rows(int G) {
  int nb = 1;
  while (nb < kMaxBatchPerPass && gates_per_pass(G, nb + 1) == G) ++nb;
  return nb;
}

// The last rows < kMaxBatchPerPass: the widest pass that fits them.
template <int G, int NB, bool GM, class W, class HT>
inline void recurrent_block_tail(const W* wp, int64_t K, int64_t H, const HT* const* h,
                                 float* const* g_rows, int64_t rows, int64_t cnt, int64_t prefetch) {
  if constexpr (NB > 1) {
    if (rows < NB) {
      recurrent_block_tail<G, NB - 1, GM>(wp, K, H, h, g_rows, rows, cnt, prefetch);
      return;
    }
  }
  recurrent_block_gates<G, NB, GM>(wp, K, H, h, g_rows, cnt, prefetch);
}

template <int G, bool GM, class W, class HT>
inline void recurrent_block_rows(const W* wp, int64_t K, int64_t H, const HT* const* h,
                                 float* const* g_rows, int64_t rows, int64_t cnt, int64_t prefetch) {
  constexpr int NB = GM ? kMaxBatchPerPass : all_gates_rows(G);
  int64_t b = 0;
  for (; b + NB <= rows; b += NB) recurrent_block_gates<G, NB, GM>(wp, K, H, h + b, g_rows + b, cnt, prefetch);
  if constexpr (NB > 1)
    if (b < rows) recurrent_block_tail<G, NB - 1, GM>(wp, K, H, h + b, g_rows + b, rows - b, cnt, prefetch);
}

// Elman layers with 32 registers: two adjacent whole blocks a pass. Their
// packed weights ([K][16] each, K * 16 apart) are read as the two gates of a
// gate-major block, so that each broadcast of h feeds two FMAs (one block a
// pass loads a broadcast per weight vector, and the loads bound it); the rows
// are cut as recurrent_block_rows<1> cuts them, and each pass keeps the
// accumulator sets of a one-block pass, so every sum runs in the same order as
// alone, whichever blocks a thread pairs. g_rows point at the first block's
// unit 0. Forward with both weights packed beforehand, two Zen 5 cores,
// in-process A/B, paired / one block a pass: Elman H = 128 N = 1 T = 256 0.84,
// H = 512 N = 4 0.91-0.92, H = 1024 N = 8 0.91, Elman 1760 N = 8 0.94, H = 256
// N = 8 0.92, N = 4 0.91, H = 128 N = 16 0.89, H = 512 N = 2 0.90; H = 1024
// N = 1 0.99 (its reads from L3 bound it); training steps 0.93-0.99.
constexpr bool pair_elman_blocks = Vec::kRegisters >= 32;
template <int NB>
inline void elman_pair_pass(const float* wp, int64_t K, const float* const* h, float* const* g_rows,
                            int64_t prefetch) {
  recurrent_block<2, 2, NB, true, k_splits(1, NB)>(wp, K, kPackBlock, h, g_rows, 0, kPackBlock, prefetch);
}
inline void elman_pair_rows(const float* wp, int64_t K, const float* const* h, float* const* g_rows,
                            int64_t rows, int64_t prefetch) {
  constexpr int NB = all_gates_rows(1);
  static_assert(NB == 4, "the tail below takes up to 3 rows");
  int64_t b = 0;
  for (; b + NB <= rows; b += NB) elman_pair_pass<NB>(wp, K, h + b, g_rows + b, prefetch);
  switch (rows - b) {
    case 3: elman_pair_pass<3>(wp, K, h + b, g_rows + b, prefetch); break;
    case 2: elman_pair_pass<2>(wp, K, h + b, g_rows + b, prefetch); break;
    case 1: elman_pair_pass<1>(wp, K, h + b, g_rows + b, prefetch); break;
    default: break;
  }
}

bool gate_major(int64_t G, int64_t batch) {
  return std::min<int64_t>(batch, kMaxBatchPerPass) > all_gates_rows(static_cast<int>(G));
}

// Requests every cache line of p[0, n) into L1.
inline void prefetch_lines(const float* p, int64_t n) {
  constexpr uintptr_t kLine = 64;
  const uintptr_t end = reinterpret_cast<uintptr_t>(p + n);
  for (uintptr_t a = reinterpret_cast<uintptr_t>(p) & ~(kLine - 1); a < end; a += kLine)
    _mm_prefetch(reinterpret_cast<const char*>(a), _MM_HINT_T0);
}

// How far ahead (bytes) the small-batch product requests each gate's weights
// into L1, for a group's slice of W_hh of slice_bytes and a batch of `batch`
// rows; 0: not at all. Measured as the bench measures (bench/problem.h's
// layers, 64-byte aligned, each call alternating with one of oneDNN's RNN
// primitive), forward with pre-packed weights, two threads of one Xeon
// (AVX-512, 2 MiB of L2 per core), time with 4 KiB ahead / without, medians of
// calls alternating the two: LSTM H = 512 N = 4 0.95-0.96 (1 KiB ahead 0.98,
// 2 KiB 0.95, 8 KiB 0.94), N = 2 0.98; GRU H = 512 N = 4 0.95, N = 2 0.98; LSTM
// H = 1024 N = 4 0.93. Where a thread's slice is smaller, or with one row, the
// requests only cost: GRU H = 256 and 128 N = 4 0.97-0.98 but LSTM H = 128 N = 4
// 1.00, Elman H = 512 N = 4 1.02, LSTM H = 256 N = 8 1.01; one row: LSTM
// H = 128 1.08, GRU H = 128 1.10, LSTM H = 256 1.06, LSTM H = 512 1.03, GRU
// H = 1024 0.99; bfloat16 weights at one row 0.97-1.01. The AVX2 kernels on
// the same CPU: LSTM H = 512 N = 4 0.94, GRU H = 512 N = 2 0.90 (not measured
// on AMD cores). Two Zen 5 cores (1 MiB of L2 each, so these slices stream
// from L3), calls as the bench makes them: one row LSTM H = 512 1.03, LSTM
// H = 640 0.99, GRU H = 640 1.01, GRU H = 1024 1.02, so one row stays without;
// LSTM H = 512 N = 4 0.99, GRU H = 512 N = 2 1.00.
// (With only oneDNN's call between the timed ones the same shapes read
// 0.87-0.98: a gain that the bench's order of calls does not keep.)
// (A first measurement with the packed weights 16 bytes off a
// cache line, every vector load split across two lines, found 10-20% gains at
// one row too: the misaligned stream is what the hardware prefetchers served
// badly.)
inline int64_t recurrent_prefetch_bytes(int64_t slice_bytes, bool bf16, int64_t batch) {
  if (bf16 || batch < 2 || slice_bytes < (int64_t{1} << 20)) return 0;
  return 4096;
}

// Thread count for the small-batch paths: at most one per 16-unit block, and
// one alone where a step's product (N * G * H^2 multiply-adds) is at most
// one_thread_macs: the threads' meeting every step (cache lines from core to
// core) then costs more than the work it shares. Two Zen 5 cores, time on one
// thread / on two, in-process A/B: forward GRU H = 32 N = 1 0.80, LSTM 32 0.92,
// Elman 64 0.91, Elman 32 N = 2 0.76 (up to 4096); GRU 48 1.20, Elman 96 1.16,
// GRU 32 N = 2 1.21, LSTM 48 0.96 (above); training steps GRU 32 0.29, LSTM 32
// 0.31, Elman 64 0.85, Elman 32 N = 2 0.64, GRU 48 0.90, GRU 32 N = 2 0.95 (up
// to 8192); Elman 96 1.15, GRU 64 1.16 (above).
constexpr int64_t kForwardOneThreadMacs = 4096;
constexpr int64_t kBackwardOneThreadMacs = 8192;
inline int small_batch_threads(int requested, int64_t blocks, const RnnLayerDims& d, int64_t one_thread_macs) {
  if (recurrent_step_macs(d) <= one_thread_macs) return 1;
  return static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>({requested, blocks, detail::StepScheduler::kMaxGroups})));
}

// ---------------------------------------------------------------------------
// Input projection from W_ih packed beforehand (SmallBatchForward::w_ih_packed):
// for one 16-unit block and every row of x, gate q's sums go to columns
// col[q] + u of the gates rows, from W_ih packed as W_hh is ([I][G][16]): the
// recurrent step's product, with more rows per pass. Each sum runs along k from
// zero in one chain, whatever the rows per pass or the block's owner, so its
// bits do not depend on the thread count. One thread of a Zen 5, LSTM H = I =
// 512, a thread's 256 units, us: 25 rows 99-101 against 140-145 for oneDNN's
// brgemm matmul and 168-189 for its sgemm; 1 row 19 / 60 / 26; 8 rows 35-47 /
// 74-79 / 66; 16 rows 68-71 / 106-110 / 132; 100 rows 398 / 441-449 / 488-497.
// Packing a block just before its product instead costs about 65 us more (the
// transposes) and loses to the GEMMs at every size up to 32 rows; over whole
// sequences of 128 rows and more it wins (rnn.cpp, self_packed_projection).

// Gates per pass: all of them with 32 registers; with 16 (AVX2: a 16-unit block
// is two vectors per gate) two at a time, or one for the GRU, over weights
// packed gate-major ([G][I][16] per block), so that each pass streams its
// gates' weights contiguous (projection_gate_major).
constexpr int projection_gates(int G) { return Vec::kRegisters >= 32 ? G : G % 2 == 0 ? 2 : 1; }
constexpr bool projection_gate_major(int G) { return projection_gates(G) < G; }

// Rows per pass: with 32 registers the most whose accumulators leave room for
// one k's weights and a broadcast (6 for the LSTM: 5 and 6 measured against 4,
// 4-7% faster; 8 for the GRU), at most 8; with 16, the accumulators and a
// broadcast, the weights taken from memory by the FMAs (LSTM, two gates a
// pass: 3 rows; one thread of a Zen 5 running the AVX2 code, 25 rows of a
// thread's 256 units of H = I = 512, 200-206 us against 214-221 for one gate
// at a time over 5-6 rows and 237-241 for oneDNN's AVX2 sgemm).
constexpr int projection_rows(int G) {
  const int per_row = projection_gates(G) * kSub;
  const int fit = Vec::kRegisters >= 32 ? (Vec::kRegisters - 2 - per_row) / per_row : (Vec::kRegisters - 4) / per_row;
  return fit < 1 ? 1 : fit > 8 ? 8 : fit;
}

// Gates [g0, g0 + GP) of NB rows.
template <int G, int GP, int NB>
inline void projection_pass(const float* wp, int64_t I, const float* x, int64_t ldx, float* g, int64_t ldg,
                            const int64_t (&col)[G], int g0, int64_t cnt) {
  constexpr bool GM = projection_gate_major(G);
  // Elements between consecutive k, and between consecutive gates.
  const int64_t k_step = GM ? kPackBlock : G * kPackBlock, g_step = GM ? I * kPackBlock : kPackBlock;
  wp += g0 * g_step;
  reg acc[NB][GP][kSub];
#pragma GCC unroll 16
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 16
    for (int q = 0; q < GP; ++q)
#pragma GCC unroll 16
      for (int s = 0; s < kSub; ++s) acc[b][q][s] = Vec::zero();
  for (int64_t k = 0; k < I; ++k) {
    const float* w = wp + k * k_step;
    reg wv[GP][kSub];
#pragma GCC unroll 16
    for (int q = 0; q < GP; ++q)
#pragma GCC unroll 16
      for (int s = 0; s < kSub; ++s) wv[q][s] = Vec::load(w + q * g_step + s * Vec::kLanes);
#pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) {
      const reg xb = Vec::broadcast(x + b * ldx + k);
#pragma GCC unroll 16
      for (int q = 0; q < GP; ++q)
#pragma GCC unroll 16
        for (int s = 0; s < kSub; ++s) acc[b][q][s] = Vec::fmadd(wv[q][s], xb, acc[b][q][s]);
    }
  }
#pragma GCC unroll 16
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 16
    for (int q = 0; q < GP; ++q)
#pragma GCC unroll 16
      for (int s = 0; s < kSub; ++s) {
        const int64_t c = sub_lanes(cnt, s);
        if (c > 0) st(g + b * ldg + col[g0 + q] + s * Vec::kLanes, acc[b][q][s], c);
      }
}

#ifdef RNNKIT_SIMD_BF16_DOT
// The bfloat16 products' input projection on a CPU with AVX512_BF16: W_ih's
// block packed as pack_recurrent_bf16 packs ([I/2][G][16][2]) and x rounded to
// bfloat16 in pairs (xp rows, ldx pairs apart: round_pairs), gates [g0, g0 +
// GP) of NB rows, each sum from zero (recurrent_block_dot's arithmetic).
template <int G, int GP, int NB>
__attribute__((target("avx512bf16"), noinline)) void projection_pass_dot(
    const uint16_t* wp, int64_t I, const uint32_t* xp, int64_t ldx, float* g, int64_t ldg,
    const int64_t (&col)[G], int g0, int64_t cnt) {
  static_assert(kSub == 1 && !projection_gate_major(G), "16-lane vectors, k-major weights");
  const int64_t k_step = G * kPackBlock * 2, g_step = kPackBlock * 2, pairs = (I + 1) / 2;
  wp += g0 * g_step;
  reg acc[NB][GP];
#pragma GCC unroll 16
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 16
    for (int q = 0; q < GP; ++q) acc[b][q] = Vec::zero();
  for (int64_t kp = 0; kp < pairs; ++kp) {
    const uint16_t* w = wp + kp * k_step;
    __m512bh wv[GP];
#pragma GCC unroll 16
    for (int q = 0; q < GP; ++q) wv[q] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + q * g_step));
#pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) {
      const __m512bh xb = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(xp[b * ldx + kp])));
#pragma GCC unroll 16
      for (int q = 0; q < GP; ++q) acc[b][q] = _mm512_dpbf16_ps(acc[b][q], wv[q], xb);
    }
  }
#pragma GCC unroll 16
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 16
    for (int q = 0; q < GP; ++q) st(g + b * ldg + col[g0 + q], acc[b][q], cnt);
}

template <int G, int GP, int NB>
inline void projection_pass(const uint16_t* wp, int64_t I, const uint32_t* xp, int64_t ldx, float* g,
                            int64_t ldg, const int64_t (&col)[G], int g0, int64_t cnt) {
  projection_pass_dot<G, GP, NB>(wp, I, xp, ldx, g, ldg, col, g0, cnt);
}
#endif

// A pass over nb <= NB rows, every gate.
template <int G, int NB, class W, class X>
inline void projection_pass_rows(const W* wp, int64_t I, const X* x, int64_t ldx, float* g, int64_t ldg,
                                 const int64_t (&col)[G], int64_t cnt, int64_t nb) {
  if constexpr (NB > 1) {
    if (nb < NB) {
      projection_pass_rows<G, NB - 1>(wp, I, x, ldx, g, ldg, col, cnt, nb);
      return;
    }
  }
  constexpr int GP = projection_gates(G);
  for (int g0 = 0; g0 < G; g0 += GP) projection_pass<G, GP, NB>(wp, I, x, ldx, g, ldg, col, g0, cnt);
}

// Rows [0, M) in passes of equal size (25 rows as 5 x 5 rather than 4 x 6 + 1,
// whose one-row pass makes one FMA per weight loaded).
template <int G, class W, class X>
void project_block(const W* wp, int64_t I, int64_t M, const X* x, int64_t ldx, float* g, int64_t ldg,
                   const int64_t (&col)[G], int64_t cnt) {
  constexpr int R = projection_rows(G);
  const int64_t passes = (M + R - 1) / R, per = (M + passes - 1) / passes;
  for (int64_t m = 0; m < M; m += per)
    projection_pass_rows<G, R>(wp, I, x + m * ldx, ldx, g + m * ldg, ldg, col, cnt, std::min(per, M - m));
}

// Kernels::projection_gate_major.
bool projection_gate_major_for(int64_t G) { return projection_gate_major(static_cast<int>(G)); }

// Whether this file has the AVX512_BF16 dot kernels (the AVX-512 one): where
// not, SmallBatchForward::bf16_dot_hardware is ignored, so that no buffer is
// sized for pairs that the float products would then overrun.
#ifdef RNNKIT_SIMD_BF16_DOT
constexpr bool kDotKernels = true;
#else
constexpr bool kDotKernels = false;
#endif

// A block of weights packed in bfloat16 pairs ([K/2][G][16][2], as
// pack_recurrent_bf16 packs it k-major) widened into the float layout
// pack_recurrent_block writes ([K][G][16], or [G][K][16] with GM).
template <int G, bool GM>
void widen_block_bf16(const uint16_t* src, int64_t K, float* dst) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t g = 0; g < G; ++g) {
      const uint16_t* in = src + ((k / 2) * G + g) * 2 * kPackBlock + k % 2;
      float* out = dst + (GM ? g * K + k : k * G + g) * kPackBlock;
      for (int64_t u = 0; u < kPackBlock; ++u) {
        const uint32_t bits = static_cast<uint32_t>(in[2 * u]) << 16;
        std::memcpy(out + u, &bits, sizeof bits);
      }
    }
}

template <int G, int S, bool GM>
void small_batch_forward_cell(const SmallBatchForward& a, RowForward pointwise) {
  const RnnLayerDims& d = *a.dims;
  // K: the width of h, the recurrent product's depth (P with a projection).
  const int64_t H = d.hidden_size, P = d.proj_size, K = P > 0 ? P : H;
  const int64_t rows = packed_rows(d);
  const int64_t blocks = (H + kPackBlock - 1) / kPackBlock;
  const int64_t block_elems = K * G * kPackBlock;
  const int64_t block_elems_bf16 = (K + 1) / 2 * 2 * G * kPackBlock;
  const int64_t I = d.input_size;
  const bool lstm = d.cell == CellType::LSTM;
  const int groups = small_batch_threads(a.num_threads, blocks, d, kForwardOneThreadMacs);
  detail::StepScheduler scheduler(groups);
  const int64_t slice_bytes = blocks / groups * (a.bf16 ? block_elems_bf16 * 2 : block_elems * 4);
  const bool split = groups > 1 && slice_bytes >= a.split_min_bytes && P == 0;
  const int64_t p_blocks = (P + kPackBlock - 1) / kPackBlock;
  const int64_t prefetch =
      a.prefetch_bytes >= 0 ? a.prefetch_bytes : recurrent_prefetch_bytes(slice_bytes, a.bf16, d.batch);
  if (split)
    for (int g = 0; g < groups; ++g)
      scheduler.set_parts(g, static_cast<int>(blocks * (g + 1) / groups - blocks * g / groups));

  // Decided on a gate's whole projection, so that each unit's sum takes the
  // same kernel whoever owns it.
  const bool projection_matmul = prefer_this_thread_matmul(rows, H, d.input_size);
#pragma omp parallel num_threads(groups)
  {
    const int t = omp_get_thread_num();
    detail::StepScheduler::ThreadState sched_state;
    // Step 1 computes the input projection of each group's units for all steps
    // (one GEMM per gate block, single-threaded inside this region) and packs
    // the group's blocks; step k + 1 is time step k of the walk.
    const bool pack_hr = P > 0 && a.pack_hr;
    scheduler.step(t, 1, sched_state, [&](int g) {
      // W_hr's blocks of outputs, each group those its projection steps run.
      if (pack_hr)
        pack_recurrent(1, P, H, a.w_hr, a.packed_hr, p_blocks * g / groups, p_blocks * (g + 1) / groups, false);
      const int64_t jb0 = blocks * g / groups, jb1 = blocks * (g + 1) / groups;
      const int64_t u0 = std::min(H, jb0 * kPackBlock), u1 = std::min(H, jb1 * kPackBlock);
      if (u1 <= u0) return;
      // Gate block q of W_ih goes to column block q of the gates row, except the
      // GRU's n-part, which goes to block 3 (block 2 collects W_hn h from zero).
      // The partial last block (H % 16 units) is a GEMM of its own whoever owns
      // it, so that every unit's sum is taken by a GEMM of the same shape class
      // whatever the thread count (a one-column GEMM is a matrix-vector product,
      // which sums in another order).
      int64_t col[G];
      for (int q = 0; q < G; ++q) col[q] = (S == 4 && G == 3 && q == 2) ? 3 * H : q * H;
      if (a.bf16_products) {
        // x rounded to bfloat16 (all rows, by each thread for itself), then per
        // block W_ih's rows rounded and packed, and the product: in pairs for
        // the AVX512_BF16 dot products, else as floats for the float product
        // (exact products of the same rounded values).
        const bool hw = kDotKernels && a.bf16_dot_hardware;
        const int64_t xs = hw ? (I + 31) / 32 * 16 : I;  // a rounded row's stride
        const int64_t x_floats = (rows * xs + 15) / 16 * 16;
        const int64_t block = hw ? (packed_recurrent_size_bf16(G, kPackBlock, I) + 1) / 2 : I * G * kPackBlock;
        float* xr = thread_scratch(static_cast<size_t>(x_floats + block));
        float* wp = xr + x_floats;
        for (int64_t r = 0; r < rows; ++r) {
#ifdef RNNKIT_SIMD_BF16_DOT
          if (hw) {
            round_pairs(a.x + r * a.ldx, I, reinterpret_cast<uint32_t*>(xr + r * xs));
            continue;
          }
#endif
          for (int64_t k = 0; k < I; ++k) xr[r * xs + k] = round_to_bfloat16(a.x[r * a.ldx + k]);
        }
        const int64_t given_block = (I + 1) / 2 * 2 * G * kPackBlock;  // a block of w_ih_bf16
        for (int64_t jb = jb0; jb < jb1; ++jb) {
          const int64_t cnt = std::min(kPackBlock, H - jb * kPackBlock);
          const uint16_t* given = a.w_ih_bf16 != nullptr ? a.w_ih_bf16 + jb * given_block : nullptr;
#ifdef RNNKIT_SIMD_BF16_DOT
          if (hw) {
            if (given == nullptr) {
              pack_recurrent_block_bf16(G, H, I, a.w_ih, jb, reinterpret_cast<uint16_t*>(wp), false);
              given = reinterpret_cast<const uint16_t*>(wp);
            }
            project_block<G>(given, I, rows, reinterpret_cast<const uint32_t*>(xr), xs, a.gates + jb * kPackBlock,
                             a.ldg, col, cnt);
            continue;
          }
#endif
          constexpr bool gm = projection_gate_major(G);
          if (given != nullptr) {
            widen_block_bf16<G, gm>(given, I, wp);
          } else {
            pack_recurrent_block(G, H, I, a.w_ih, jb, wp, gm);
            for (int64_t i = 0; i < block; ++i) wp[i] = round_to_bfloat16(wp[i]);
          }
          project_block<G>(wp, I, rows, xr, xs, a.gates + jb * kPackBlock, a.ldg, col, cnt);
        }
      } else if (a.w_ih_packed != nullptr) {
        for (int64_t jb = jb0; jb < jb1; ++jb)
          project_block<G>(a.w_ih_packed + jb * I * G * kPackBlock, I, rows, a.x, a.ldx, a.gates + jb * kPackBlock,
                           a.ldg, col, std::min(kPackBlock, H - jb * kPackBlock));
      } else if (a.pack_projection) {
        const int64_t block = I * G * kPackBlock;
        float* wp = thread_scratch(static_cast<size_t>(block));
        for (int64_t jb = jb0; jb < jb1; ++jb) {
          pack_recurrent_block(G, H, I, a.w_ih, jb, wp, projection_gate_major(G));
          project_block<G>(wp, I, rows, a.x, a.ldx, a.gates + jb * kPackBlock, a.ldg, col,
                           std::min(kPackBlock, H - jb * kPackBlock));
        }
      } else {
        const int64_t full_end = std::max(u0, std::min(u1, H / kPackBlock * kPackBlock));
        for (int q = 0; q < G; ++q)
          for (const auto& [v0, v1] : {std::pair<int64_t, int64_t>{u0, full_end}, {full_end, u1}})
            if (v1 > v0)
              gemm_on_this_thread(rows, v1 - v0, I, a.x, a.ldx, a.w_ih + (q * H + v0) * I, I,
                                  a.gates + col[q] + v0, a.ldg, projection_matmul);
      }
      if (S == 4 && G == 3)
        for (int64_t r = 0; r < rows; ++r)
          std::memset(a.gates + r * a.ldg + 2 * H + u0, 0, static_cast<size_t>(u1 - u0) * sizeof(float));
      // Packed last, so that the blocks packed last are still in cache for the
      // first step, which walks them in reverse.
      if (a.pack) pack_recurrent(G, H, K, a.w_hh, a.packed, jb0, jb1, GM);
    });
    // The bfloat16 products' rounded h (round_h_rows): in pairs for the
    // AVX512_BF16 dot products, else as floats for the widening product.
    uint32_t* hp_rows[kSmallBatchMax];
    float* hr_rows[kSmallBatchMax];
    int64_t rounded_step = -1;
    const bool dot_hardware = kDotKernels && a.bf16_dot_hardware;
    float* m_rows[kSmallBatchMax];
    const float* h_rows[kSmallBatchMax];
    const float* c_prev_rows[kSmallBatchMax];
    float* c_rows[kSmallBatchMax];
    float* g_rows[kSmallBatchMax];
    int64_t step = 1;  // gate steps are even (the scheduler times its groups on steps 32k)
    int64_t walks = 0;  // time steps begun: the first walks its blocks in reverse
    detail::for_each_step(d, rows, true, [&](const detail::Step& s) {
      for (int64_t b = 0; b < s.n; ++b) {
        const bool cont = b < s.n_cont;
        h_rows[b] = cont ? a.y + (s.off_prev + b) * a.ldy : (a.h0 != nullptr ? a.h0 + b * K : a.zeros);
        if (P > 0) m_rows[b] = a.m_buf + (a.training ? s.off + b : b) * H;
        if (lstm) {
          if (a.training) {
            c_prev_rows[b] = cont ? a.c_buf + (s.off_prev + b) * H : nullptr;
            c_rows[b] = a.c_buf + (s.off + b) * H;
          } else {
            c_prev_rows[b] = cont ? a.c_buf + b * H : nullptr;
            c_rows[b] = a.c_buf + b * H;
          }
          if (!cont) c_prev_rows[b] = a.c0 != nullptr ? a.c0 + b * H : a.zeros;
        } else {
          c_prev_rows[b] = nullptr;
          c_rows[b] = nullptr;
        }
        g_rows[b] = a.gates + (s.off + b) * a.ldg;
      }
      ++step;
      ++walks;
      const bool ascending = (walks & 1) == 0;
      // Block i of group g's walk this step.
      const auto walk_block = [&](int g, int64_t i) {
        const int64_t jb0 = blocks * g / groups, jb1 = blocks * (g + 1) / groups;
        return ascending ? jb0 + i : jb1 - 1 - i;
      };
      // The bfloat16 products: this thread's copy of the step's h rows rounded
      // to bfloat16, made by the first of its products in the step (its own
      // group's or a part it runs for another).
      const auto round_h_rows = [&]() {
        if (rounded_step == step) return;
        rounded_step = step;
        // In the thread's scratch (step 1's packing buffer, no longer in use),
        // whole 32-value conversions a row: (K + 31) / 32 * 16 pairs.
        const int64_t stride = dot_hardware ? (K + 31) / 32 * 16 : K;
        float* buf = thread_scratch(static_cast<size_t>(s.n * stride));
        for (int64_t b = 0; b < s.n; ++b) {
          hp_rows[b] = reinterpret_cast<uint32_t*>(buf + b * stride);
          hr_rows[b] = buf + b * stride;
        }
        for (int64_t b = 0; b < s.n; ++b) {
#ifdef RNNKIT_SIMD_BF16_DOT
          if (dot_hardware) {
            round_pairs(h_rows[b], K, hp_rows[b]);
            continue;
          }
#endif
          for (int64_t k = 0; k < K; ++k) hr_rows[b][k] = round_to_bfloat16(h_rows[b][k]);
        }
      };
      // Whether an Elman layer's float weights may take two adjacent whole
      // blocks a pass (elman_pair_rows).
      constexpr bool kPairs = G == 1 && pair_elman_blocks;
      // The product for block jb, or with pair for blocks jb and jb + 1.
      const auto product = [&](int64_t jb, bool pair = false) {
        const int64_t j = jb * kPackBlock;
        const int64_t cnt = std::min<int64_t>(kPackBlock, H - j);
        float* g_at[kSmallBatchMax];
        for (int64_t b = 0; b < s.n; ++b) g_at[b] = g_rows[b] + j;
        if constexpr (kPairs) {
          if (pair) {
            elman_pair_rows(a.packed + jb * block_elems, K, h_rows, g_at, s.n, prefetch / 4);
            return;
          }
        }
        const uint16_t* w16 = reinterpret_cast<const uint16_t*>(a.packed) + jb * block_elems_bf16;
        if (a.bf16_products) {
          round_h_rows();
#ifdef RNNKIT_SIMD_BF16_DOT
          if (dot_hardware) {
            recurrent_block_rows<G, GM>(w16, K, H, hp_rows, g_at, s.n, cnt, prefetch / 2);
            return;
          }
#endif
          recurrent_block_rows<G, GM>(w16, K, H, hr_rows, g_at, s.n, cnt, prefetch / 2);
        } else if (a.bf16)
          recurrent_block_rows<G, GM>(w16, K, H, h_rows, g_at, s.n, cnt, prefetch / 2);
        else
          recurrent_block_rows<G, GM>(a.packed + jb * block_elems, K, H, h_rows, g_at, s.n, cnt, prefetch / 4);
      };
      // Blocks i0 .. i0 + count - 1 of group g's walk, in pairs where they can
      // (consecutive blocks of a walk are adjacent).
      const auto products = [&](int g, int64_t i0, int64_t count) {
        for (int64_t i = i0; i < i0 + count; ++i) {
          const int64_t jb = walk_block(g, i);
          if constexpr (kPairs) {
            const int64_t lo = std::min(jb, walk_block(g, i + 1));
            if (!a.bf16 && i + 1 < i0 + count && (lo + 2) * kPackBlock <= H) {
              product(lo, true);
              ++i;
              continue;
            }
          }
          product(jb);
        }
      };
      // The pointwise pass over units [u0, u1) at once (its vectors are
      // independent, so their long activation chains overlap), and the entries
      // whose sequence ends here: those units of h_n and c_n.
      const auto finish_units = [&](int64_t u0, int64_t u1) {
        for (int64_t b = 0; b < s.n && u1 > u0; ++b)
          // (The LSTM's pass takes no h; with a projection its rows are P wide.)
          pointwise(u1 - u0, H, g_rows[b] + u0, a.bias + u0, lstm ? nullptr : h_rows[b] + u0,
                    lstm ? c_prev_rows[b] + u0 : nullptr, lstm ? c_rows[b] + u0 : nullptr,
                    (P > 0 ? m_rows[b] : a.y + (s.off + b) * a.ldy) + u0, a.training);
        for (int64_t b = s.n_next_cont; b < s.n && u1 > u0; ++b) {
          if (a.h_n != nullptr && P == 0)
            std::memcpy(a.h_n + b * H + u0, a.y + (s.off + b) * a.ldy + u0, (u1 - u0) * sizeof(float));
          if (lstm && a.c_n != nullptr)
            std::memcpy(a.c_n + b * H + u0, c_rows[b] + u0, (u1 - u0) * sizeof(float));
        }
      };
      const auto run_group = [&](int g) {
        const int64_t jb0 = blocks * g / groups, jb1 = blocks * (g + 1) / groups;
        const int64_t u0 = jb0 * kPackBlock, u1 = std::min(H, jb1 * kPackBlock);
        // All of h is read by every block, and the other groups' parts of it
        // were just written on other cores: request those cache lines at once,
        // so that their transfers overlap each other and the product over this
        // group's own part instead of stalling the first block where it meets
        // them (-2 to -7% per step at H = 128, N = 1 on two Zen 3 cores, where a
        // line takes about 200 ns from one core to the other). The same for the
        // step's gates rows (written by the input projection long before, so
        // in L2 or L3; -1.5% there): each block's first loads would wait for
        // them in turn, and their strided lines escape the hardware prefetcher.
        for (int64_t b = 0; b < s.n; ++b) {
          prefetch_lines(h_rows[b], K);
          if (u1 > u0)
            for (int q = 0; q < S; ++q) prefetch_lines(g_rows[b] + q * H + u0, u1 - u0);
        }
        if (!split) {
          products(g, 0, jb1 - jb0);
          finish_units(u0, u1);
          return;
        }
        // Split: the blocks a few at a time (StepScheduler::take_front), while
        // a thread done with its own group may take the last ones; the
        // pointwise pass then covers the blocks this thread ran (the first
        // `taken` of the walk).
        int64_t taken = 0;
        for (int first, count; (count = scheduler.take_front(g, step, &first)) > 0; taken += count)
          products(g, first, count);
        if (ascending)
          finish_units(u0, std::min(H, (jb0 + taken) * kPackBlock));
        else
          finish_units((jb1 - taken) * kPackBlock, u1);
      };
      const auto run_part = [&](int g, int i) {
        const int64_t jb = walk_block(g, i);
        product(jb);
        finish_units(jb * kPackBlock, std::min(H, (jb + 1) * kPackBlock));
      };
      if (split)
        scheduler.step(t, step, sched_state, run_group, run_part);
      else
        scheduler.step(t, step, sched_state, run_group);
      if (P == 0) return;
      // The projection h = m W_hr^T: group g's blocks of the P outputs, once
      // every group's units of m are written; then those columns of h_n for
      // the entries whose sequence ends here.
      ++step;
      scheduler.step(t, step, sched_state, [&](int g) {
        const int64_t pb0 = p_blocks * g / groups, pb1 = p_blocks * (g + 1) / groups;
        const int64_t p0 = pb0 * kPackBlock, p1 = std::min(P, pb1 * kPackBlock);
        if (p1 <= p0) return;
        float* y_at[kSmallBatchMax];
        for (int64_t b = 0; b < s.n; ++b) {
          prefetch_lines(m_rows[b], H);
          y_at[b] = a.y + (s.off + b) * a.ldy;
          std::memset(y_at[b] + p0, 0, static_cast<size_t>(p1 - p0) * sizeof(float));
        }
        for (int64_t jb = pb0; jb < pb1; ++jb) {
          float* out[kSmallBatchMax];
          for (int64_t b = 0; b < s.n; ++b) out[b] = y_at[b] + jb * kPackBlock;
          recurrent_block_rows<1, false>(a.packed_hr + jb * H * kPackBlock, H, P, m_rows, out, s.n,
                                         std::min(kPackBlock, P - jb * kPackBlock), 0);
        }
        if (a.h_n != nullptr)
          for (int64_t b = s.n_next_cont; b < s.n; ++b)
            std::memcpy(a.h_n + b * P + p0, y_at[b] + p0, static_cast<size_t>(p1 - p0) * sizeof(float));
      });
    });
  }
}

template <bool GM>
void small_batch_forward_layout(const SmallBatchForward& a) {
  switch (a.dims->cell) {
    // One gate: both layouts are the same.
    case CellType::RNN_TANH: small_batch_forward_cell<1, 1, false>(a, &elman_forward<false>); return;
    case CellType::RNN_RELU: small_batch_forward_cell<1, 1, false>(a, &elman_forward<true>); return;
    case CellType::LSTM: small_batch_forward_cell<4, 4, GM>(a, &lstm_forward); return;
    case CellType::GRU: small_batch_forward_cell<3, 4, GM>(a, &gru_forward); return;
  }
}

void small_batch_forward(const SmallBatchForward& a) {
  if (a.gate_major)
    small_batch_forward_layout<true>(a);
  else
    small_batch_forward_layout<false>(a);
}

// Small-batch backward. The same groups of units as the forward; a group's units
// are also its columns of dh = dgates W_hh, so per step it
//   - runs the pointwise backward on its units (needing dh of its units only),
//   - meets the others (dh needs every unit's dgates),
//   - computes dh for its columns from all rows of W_hh (row-major W_hh is
//     contiguous along those columns, so no packing).
// One synchronisation per step.

constexpr int64_t kGradChunk = 32;

// dh_b[k0 + v*L ...] (+)= sum_r dg_b[r] * W[r, k0 + ...] over rows [r0, r1) of
// W, for NB batch rows b and the cnt columns from k0, (KV-1)*L < cnt <= KV*L
// (Full: cnt == KV*L); from_zero starts the sums at 0 instead of dh. Prefetch:
// see recurrent_grad_rows; without it, ahead > 0 requests the block's lines
// that many rows ahead. The loops are unrolled whole (the pragmas) so that the
// accumulators stay in registers: without them GCC kept them on the stack, and
// the walk took about as long again as the forward's product over the same
// weights (see recurrent_grad_rows).
template <int NB, int KV, bool Prefetch, bool Full>
inline void recurrent_grad_block(const float* w, int64_t r0, int64_t r1, int64_t R, int64_t ldw,
                                 const float* const* dg, float* const* dh, int64_t k0, int64_t cnt,
                                 bool from_zero, int64_t ahead) {
  reg acc[NB][KV];
  int64_t c[KV];
#pragma GCC unroll 16
  for (int v = 0; v < KV; ++v) c[v] = Full ? Vec::kLanes : sub_lanes(cnt, v);
#pragma GCC unroll 16
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 16
    for (int v = 0; v < KV; ++v)
      acc[b][v] = from_zero ? Vec::zero() : ld(dh[b] + k0 + v * Vec::kLanes, c[v]);
  for (int64_t r = r0; r < r1; ++r) {
    const float* wr = w + r * ldw + k0;
    if (Prefetch && r + kGradChunk < R) __builtin_prefetch(wr + kGradChunk * ldw, 0, 3);
    if (!Prefetch && ahead > 0 && r + ahead < R)
#pragma GCC unroll 16
      for (int v = 0; v < KV; ++v)
        _mm_prefetch(reinterpret_cast<const char*>(wr + ahead * ldw + v * Vec::kLanes), _MM_HINT_T0);
    reg gb[NB];
#pragma GCC unroll 16
    for (int b = 0; b < NB; ++b) gb[b] = Vec::broadcast(dg[b] + r);
#pragma GCC unroll 16
    for (int v = 0; v < KV; ++v) {
      const reg wv = Full ? Vec::load(wr + v * Vec::kLanes) : ld(wr + v * Vec::kLanes, c[v]);
#pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) acc[b][v] = Vec::fmadd(wv, gb[b], acc[b][v]);
    }
  }
#pragma GCC unroll 16
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 16
    for (int v = 0; v < KV; ++v) st(dh[b] + k0 + v * Vec::kLanes, acc[b][v], c[v]);
}

// One column block of cnt <= KV*L columns, with as many vectors as it takes: a
// narrower last block does no FMAs on vectors of zeros (it did before, 1/8 of
// lstm-512-4's walk).
template <int NB, int KV>
inline void recurrent_grad_block_vectors(const float* w, int64_t r0, int64_t r1, int64_t R, int64_t ldw,
                                         const float* const* dg, float* const* dh, int64_t k0, int64_t cnt,
                                         bool from_zero, bool prefetch, int64_t ahead) {
  if constexpr (KV > 1) {
    if (cnt <= (KV - 1) * Vec::kLanes) {
      recurrent_grad_block_vectors<NB, KV - 1>(w, r0, r1, R, ldw, dg, dh, k0, cnt, from_zero, prefetch, ahead);
      return;
    }
  }
  const bool full = cnt == KV * Vec::kLanes;
  if (prefetch && full)
    recurrent_grad_block<NB, KV, true, true>(w, r0, r1, R, ldw, dg, dh, k0, cnt, from_zero, 0);
  else if (prefetch)
    recurrent_grad_block<NB, KV, true, false>(w, r0, r1, R, ldw, dg, dh, k0, cnt, from_zero, 0);
  else if (full)
    recurrent_grad_block<NB, KV, false, true>(w, r0, r1, R, ldw, dg, dh, k0, cnt, from_zero, ahead);
  else
    recurrent_grad_block<NB, KV, false, false>(w, r0, r1, R, ldw, dg, dh, k0, cnt, from_zero, ahead);
}

template <int NB>
inline void recurrent_grad_rows_nb(const float* w, int64_t r0, int64_t r1, int64_t R, int64_t ldw,
                                   const float* const* dg, float* const* dh, int64_t k0, int64_t k1,
                                   bool from_zero, bool prefetch, int64_t ahead) {
  constexpr int KV = std::max(1, std::min(8, (Vec::kRegisters - 4) / NB - 1));
  for (int64_t k = k0; k < k1; k += KV * Vec::kLanes) {
    const int64_t cnt = std::min<int64_t>(KV * Vec::kLanes, k1 - k);
    recurrent_grad_block_vectors<NB, KV>(w, r0, r1, R, ldw, dg, dh, k, cnt, from_zero, prefetch, ahead);
  }
}

// dh_b[k0:k1] (+)= dg_b W for the batch rows b < rows, W of R rows.
//   - A W_hh that stays in cache across steps is walked column block by column
//     block over all of its rows, the sums held in registers throughout.
//   - A bigger one (streamed; rnn.cpp, stream_w_hh_in_backward) would be read one
//     line per row at a stride of H floats, a pattern the hardware prefetchers
//     do not follow from L3 or DRAM. Its rows are taken in chunks of kGradChunk
//     instead: each column block of a chunk prefetches its lines of the next
//     chunk, and all batch rows take a chunk while it is in L1, so W_hh is read
//     once per step for any batch.
// Each column sums its rows in ascending order either way: the results are the
// same bits. Measured on Zen 3 (2 threads, training step, minima of interleaved
// runs), streamed against the plain walk: lstm-2048-4-10 backward 96 -> 60 ms,
// gru-1024-1-300 step 138 -> 127 ms, lstm-768-2-50 26.1 -> 23.4 ms; with W_hh of
// 4 MiB or less (lstm-512-1/4, rnn_tanh-1024-8, lstm-256-8) neutral to 5% slower,
// hence the threshold.
//   - The plain walk requests each column block's lines ahead rows ahead (0:
//     not at all; see recurrent_grad_ahead).
inline void recurrent_grad_rows(const float* w, int64_t R, int64_t ldw, const float* const* dg,
                                float* const* dh, int64_t rows, int64_t k0, int64_t k1, bool accumulate,
                                bool streamed, int64_t ahead) {
  const int64_t chunk = streamed ? kGradChunk : R;
  for (int64_t r = 0; r < R; r += chunk) {
    const int64_t r1 = std::min(R, r + chunk);
    const bool from_zero = r == 0 && !accumulate;
    int64_t b = 0;
    for (; b + 4 <= rows; b += 4)
      recurrent_grad_rows_nb<4>(w, r, r1, R, ldw, dg + b, dh + b, k0, k1, from_zero, streamed, ahead);
    switch (rows - b) {
      case 3: recurrent_grad_rows_nb<3>(w, r, r1, R, ldw, dg + b, dh + b, k0, k1, from_zero, streamed, ahead); break;
      case 2: recurrent_grad_rows_nb<2>(w, r, r1, R, ldw, dg + b, dh + b, k0, k1, from_zero, streamed, ahead); break;
      case 1: recurrent_grad_rows_nb<1>(w, r, r1, R, ldw, dg + b, dh + b, k0, k1, from_zero, streamed, ahead); break;
      default: break;
    }
  }
}

// Rows ahead that the plain walk of recurrent_grad_rows requests W's lines, for
// a group's slice of slice_bytes (all rows, the group's columns), rows of W of
// row_bytes and a step of `rows` batch rows; 0: not at all. Training steps as
// the bench measures them (see recurrent_prefetch_bytes), with / without: LSTM
// H = 512 N = 4 0.94 (its forward's share included), Elman H = 1024 N = 4
// 0.88, GRU H = 512 N = 2 0.98; but at one row LSTM H = 512 1.02, GRU H = 768
// 1.05, LSTM H = 128 1.00, hence none there, nor below 1 MiB (LSTM H = 256 N = 8
// level); the AVX2 kernels: LSTM H = 512 N = 4 0.92. Elman H = 1024 (4 KiB
// rows) at N = 4 was best at 4-6 rows ahead and 1.16x slower at 12 (a first,
// misaligned harness): at most 24 KiB ahead.
inline int64_t recurrent_grad_ahead(int64_t slice_bytes, int64_t row_bytes, int64_t rows,
                                    int64_t prefetch_bytes) {
  if (prefetch_bytes >= 0) return prefetch_bytes / row_bytes;
  if (rows < 2 || slice_bytes < (int64_t{1} << 20)) return 0;
  return std::max<int64_t>(1, std::min<int64_t>(8, (int64_t{24} << 10) / row_bytes));
}

// Step k of the backward scheduler runs, per group: the dh product of walk step
// k - 1 (needs all of its dgates: the previous scheduler step), then the
// pointwise backward of walk step k (needs only its own units of dh). One extra
// step finishes the dh product of the last walk step.
template <int G, int S, bool DirectHiddenGrad>
void small_batch_backward_cell(const SmallBatchBackward& a, RowBackward pointwise) {
  const RnnLayerDims& d = *a.dims;
  const int64_t H = d.hidden_size;
  const int64_t rows = packed_rows(d);
  const int64_t blocks = (H + kPackBlock - 1) / kPackBlock;
  const bool lstm = d.cell == CellType::LSTM;
  const int groups = small_batch_threads(a.num_threads, blocks, d, kBackwardOneThreadMacs);
  detail::StepScheduler scheduler(groups);
  const size_t float_size = sizeof(float);

#pragma omp parallel num_threads(groups)
  {
    const int t = omp_get_thread_num();
    detail::StepScheduler::ThreadState sched_state;
    const auto units = [&](int g, int64_t* u0, int64_t* u1) {
      *u0 = std::min(H, blocks * g / groups * kPackBlock);
      *u1 = std::min(H, blocks * (g + 1) / groups * kPackBlock);
    };
    // The product dh = dgates W_hh of a walk step for a group's columns, and its
    // rows that start there (dh0, dc0).
    detail::Step prev{};
    bool have_prev = false;
    const auto finish_prev = [&](int g) {
      if (!have_prev) return;
      int64_t u0, u1;
      units(g, &u0, &u1);
      if (u1 <= u0) return;
      const detail::Step& s = prev;
      const int64_t m = a.dh0 != nullptr ? s.n : s.n_cont;  // rows starting here only feed dh0
      const float* dg_rows[kSmallBatchMax];
      float* dh_rows[kSmallBatchMax];
      for (int64_t b = 0; b < m; ++b) {
        dg_rows[b] = a.dgates + (s.off + b - a.row0) * a.ldd;
        dh_rows[b] = a.dh_state + b * H;
      }
      const int64_t row_bytes = H * int64_t{sizeof(float)};
      const int64_t ahead = recurrent_grad_ahead(G * (u1 - u0) * row_bytes, row_bytes, m, a.prefetch_bytes);
      recurrent_grad_rows(a.w_hh, G * H, H, dg_rows, dh_rows, m, u0, u1, DirectHiddenGrad, a.stream_w_hh, ahead);
      const size_t bytes = static_cast<size_t>(u1 - u0) * float_size;
      for (int64_t b = s.n_cont; b < s.n; ++b) {
        if (a.dh0 != nullptr) std::memcpy(a.dh0 + b * H + u0, a.dh_state + b * H + u0, bytes);
        if (lstm && a.dc0 != nullptr) std::memcpy(a.dc0 + b * H + u0, a.dc_state + b * H + u0, bytes);
      }
    };
    int64_t step = 0, walk = 0;
    detail::for_each_step(d, rows, false, [&](const detail::Step& s) {
      const bool mine = walk >= a.walk_begin && walk < a.walk_end;
      ++walk;
      if (!mine) return;
      scheduler.step(t, ++step, sched_state, [&](int g) {
        finish_prev(g);
        int64_t u0, u1;
        units(g, &u0, &u1);
        if (u1 <= u0) return;
        const int64_t nu = u1 - u0;
        const size_t bytes = static_cast<size_t>(nu) * float_size;
        // Rows whose sequence ends at this step (in forward order) start from
        // dh_n/dc_n; the others hold the gradient from the step after.
        for (int64_t b = s.n_next_cont; b < s.n; ++b) {
          float* dh = a.dh_state + b * H + u0;
          if (a.dh_n != nullptr)
            std::memcpy(dh, a.dh_n + b * H + u0, bytes);
          else
            std::memset(dh, 0, bytes);
          if (lstm) {
            float* dc = a.dc_state + b * H + u0;
            if (a.dc_n != nullptr)
              std::memcpy(dc, a.dc_n + b * H + u0, bytes);
            else
              std::memset(dc, 0, bytes);
          }
        }
        for (int64_t b = 0; b < s.n; ++b) {
          const bool cont = b < s.n_cont;
          const float* hp = cont ? a.y + (s.off_prev + b) * a.ldy : (a.h0 != nullptr ? a.h0 + b * H : a.zeros);
          const float* cp = nullptr;
          const float* cc = nullptr;
          float* dc = nullptr;
          if (lstm) {
            cp = (cont ? a.c_all + (s.off_prev + b) * H : (a.c0 != nullptr ? a.c0 + b * H : a.zeros)) + u0;
            cc = a.c_all + (s.off + b) * H + u0;
            dc = a.dc_state + b * H + u0;
          }
          const float* dyr = a.dy != nullptr ? a.dy + (s.off + b) * a.lddy : a.zeros;
          pointwise(nu, H, a.gates + (s.off + b) * a.ldg + u0, hp + u0, cp, cc, dyr + u0,
                    a.dh_state + b * H + u0, a.dh_state + b * H + u0, dc,
                    a.dgates + (s.off + b - a.row0) * a.ldd + u0);
        }
      });
      prev = s;
      have_prev = true;
    });
    scheduler.step(t, ++step, sched_state, finish_prev);
  }
}

void small_batch_backward(const SmallBatchBackward& a) {
  switch (a.dims->cell) {
    case CellType::RNN_TANH: small_batch_backward_cell<1, 1, false>(a, &elman_backward<false>); return;
    case CellType::RNN_RELU: small_batch_backward_cell<1, 1, false>(a, &elman_backward<true>); return;
    case CellType::LSTM: small_batch_backward_cell<4, 4, false>(a, &lstm_backward); return;
    case CellType::GRU: small_batch_backward_cell<3, 4, true>(a, &gru_backward); return;
  }
}

// ---------------------------------------------------------------------------
// The lanes product (rnn_simd.h, LanesGemm): C[M, N] += A[M, K] op(W), with W
// packed in blocks of 16 output columns, each [K][16]. Each thread owns a range
// of blocks and streams them once per call, in memory order; every column's sum
// is taken in k order by one thread, from zero, then added to C, so results do
// not depend on the thread count (nor on which of the two kernels below runs).
//
// With 32 registers (AVX-512): a pass takes up to 3 adjacent blocks (three
// 16-column vectors of weights per k) against up to 8 rows of A (one broadcast
// each), 24 accumulators: 11 loads for 24 FMAs. Passes over the same blocks for
// the next 8 rows find them in L2. The rows-in-lanes kernel below (one vector of
// A^T per k against a broadcast of every column's weight: 17 loads for 16 FMAs)
// was load-bound there: 16 rows of Elman 1760 (12 MB of W from L3) ran at
// 434-460 GFLOP/s on two Zen 5 cores, these passes at 505-540 (stand-alone
// kernels, both threads, medians of 200 calls); with 16 rows in one pass and one
// block (the same loads as rows-in-lanes) 393. 6 rows x 4 blocks ran at 505, 4 x
// 6 at 477-497; software prefetch made no difference.
//
// With 16 registers (AVX2) that layout fits at most 6 rows by one block (8 loads
// for 12 FMAs), so these keep rows in lanes: the M <= 16 rows of A as two 8-lane
// vectors per k (a per-thread transposed copy of A that stays in L2) times each
// column's broadcast weight, 6, then 5 and 5 columns a pass (12 or 10
// accumulators, the two row vectors and one broadcast): 18 loads for 32 FMAs.
// Passes of 4 columns (8 accumulators, too few FMA chains in flight for two FMA
// pipes of latency 4) ran the 16-row product of Elman 1760 at 168 GFLOP/s on two
// Zen 3 cores; 6-6-4 took 0.92-0.94x that time, 6-5-5 another 0.985-0.995x
// (in-process A/B, recurrent part alone). Keeping each K chunk's rows of A in L1
// across the passes gained nothing.
constexpr bool kLanesColumnPasses = Vec::kRegisters >= 32 && Vec::kLanes == kPackBlock;
// Rows per call of the rows-in-lanes kernel: 16 with either vector width.
constexpr int kLanesRowVecs = Vec::kLanes >= 16 ? 1 : 16 / Vec::kLanes;
constexpr int kLanesPassRows = 8, kLanesPassBlocks = 3;
// Software prefetch distance along a block's weights for the rows-in-lanes
// kernel (1 KiB): without it the 16-row product of 12 MB of weights (1760 x
// 1760, 2 cores) took 1.1-1.2x as long; 4-8 KiB ahead was about the same,
// prefetching into L2 only slower.
constexpr int64_t kLanesPrefetchFloats = 256;

// Sets every register of an A x B accumulator array to zero.
template <int A, int B>
inline void zero_accumulators(reg (&acc)[A][B]) {
#pragma GCC unroll 16
  for (int i = 0; i < A; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) acc[i][j] = Vec::zero();
}

// c[r][n] += sum_k a[r][k] * w_j[k][n] for R rows and the C blocks w_j = w + j *
// K * 16 (columns n of block j land at c + j * 16; the last block has last_cols
// of them).
template <int R, int C>
inline void lanes_column_pass(const float* w, int64_t K, const float* a, int64_t lda, float* c, int64_t ldc,
                              int64_t last_cols) {
  reg acc[R][C];
  zero_accumulators(acc);
  for (int64_t k = 0; k < K; ++k) {
    reg wv[C];
#pragma GCC unroll 3
    for (int j = 0; j < C; ++j) wv[j] = Vec::load(w + (j * K + k) * kPackBlock);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const reg ar = Vec::broadcast(a + r * lda + k);
#pragma GCC unroll 3
      for (int j = 0; j < C; ++j) acc[r][j] = Vec::fmadd(wv[j], ar, acc[r][j]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int j = 0; j < C; ++j) {
      float* cj = c + r * ldc + j * kPackBlock;
      const int64_t cnt = j == C - 1 ? last_cols : kPackBlock;
      st(cj, Vec::add(ld(cj, cnt), acc[r][j]), cnt);
    }
}

// All M rows against C blocks, in passes of at most 8 rows, as even as they
// go (12 rows as 6 and 6: 12 rows of Elman 1024 by 8 and 4 ran at 427 GFLOP/s
// on two Zen 5 cores, by 6 and 6 at 497; 8 rows 469, 16 rows 506).
template <int C>
inline void lanes_column_passes(const float* w, int64_t K, const float* a, int64_t lda, int64_t M, float* c,
                                int64_t ldc, int64_t last_cols) {
  const int64_t passes = (M + kLanesPassRows - 1) / kLanesPassRows;
  for (int64_t p = 0, m0 = 0; p < passes; ++p) {
    const int64_t rows = (M - m0) / (passes - p);
    const float* am = a + m0 * lda;
    float* cm = c + m0 * ldc;
    switch (rows) {
      case 1: lanes_column_pass<1, C>(w, K, am, lda, cm, ldc, last_cols); break;
      case 2: lanes_column_pass<2, C>(w, K, am, lda, cm, ldc, last_cols); break;
      case 3: lanes_column_pass<3, C>(w, K, am, lda, cm, ldc, last_cols); break;
      case 4: lanes_column_pass<4, C>(w, K, am, lda, cm, ldc, last_cols); break;
      case 5: lanes_column_pass<5, C>(w, K, am, lda, cm, ldc, last_cols); break;
      case 6: lanes_column_pass<6, C>(w, K, am, lda, cm, ldc, last_cols); break;
      case 7: lanes_column_pass<7, C>(w, K, am, lda, cm, ldc, last_cols); break;
      default: lanes_column_pass<8, C>(w, K, am, lda, cm, ldc, last_cols); break;
    }
    m0 += rows;
  }
}

// tmp[u][r][lane] = sum_k w[k][u] * at[k][r][lane] for the C columns u of one
// pass and the R row vectors r (the rows-in-lanes kernel).
template <int C, int R>
inline void lanes_block(const float* w, int64_t K, const float* at, float* tmp) {
  reg acc[C][R];
  zero_accumulators(acc);
  for (int64_t k = 0; k < K; ++k) {
    const float* wk = w + k * kPackBlock;
    _mm_prefetch(reinterpret_cast<const char*>(wk + kLanesPrefetchFloats), _MM_HINT_T0);
    reg a[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) a[r] = Vec::load(at + (k * R + r) * Vec::kLanes);
#pragma GCC unroll 16
    for (int u = 0; u < C; ++u) {
      const reg wu = Vec::broadcast(wk + u);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[u][r] = Vec::fmadd(wu, a[r], acc[u][r]);
    }
  }
#pragma GCC unroll 16
  for (int u = 0; u < C; ++u)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) Vec::store(tmp + (u * R + r) * Vec::kLanes, acc[u][r]);
}

// One thread's blocks [b0, b1) by the rows-in-lanes kernel (M <= 16).
inline void lanes_rows_in_lanes(const LanesGemm& g, int64_t b0, int64_t b1) {
  constexpr int R = kLanesRowVecs;
  constexpr int RL = R * Vec::kLanes;  // rows per call
  // at: [K][RL], lane m = row m of A (0 past M).
  float* at = thread_scratch(static_cast<size_t>(g.K * RL + kPackBlock * RL));
  float* tmp = at + g.K * RL;  // [16][RL]: one block's sums, column-major
  if ((g.M - 1) * g.lda < (int64_t{1} << 31)) {  // the gather's 32-bit offsets reach every row
    for (int64_t k = 0; k < g.K; ++k)
      for (int r = 0; r < R; ++r) {
        const int64_t m0 = r * Vec::kLanes, rows = std::clamp<int64_t>(g.M - m0, 0, Vec::kLanes);
        Vec::store(at + k * RL + m0, rows > 0 ? Vec::gather(g.a + m0 * g.lda + k, g.lda, rows) : Vec::zero());
      }
  } else {
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t m = 0; m < RL; ++m) at[k * RL + m] = m < g.M ? g.a[m * g.lda + k] : 0.0f;
  }
  for (int64_t b = b0; b < b1; ++b) {
    const float* w = g.packed + b * g.K * kPackBlock;
    lanes_block<6, R>(w, g.K, at, tmp);
    lanes_block<5, R>(w + 6, g.K, at, tmp + 6 * RL);
    lanes_block<5, R>(w + 11, g.K, at, tmp + 11 * RL);
    const int64_t n0 = b * kPackBlock, cols = std::min<int64_t>(kPackBlock, g.N - n0);
    for (int64_t m = 0; m < g.M; ++m) {
      float* c = g.c + m * g.ldc + n0;
      for (int s = 0; s * Vec::kLanes < cols; ++s) {
        const int64_t cnt = std::min<int64_t>(Vec::kLanes, cols - s * Vec::kLanes);
        st(c + s * Vec::kLanes,
           Vec::add(ld(c + s * Vec::kLanes, cnt), Vec::gather(tmp + s * Vec::kLanes * RL + m, RL, cnt)), cnt);
      }
    }
  }
}

void lanes_gemm(const LanesGemm& g) {
  if (g.M <= 0 || g.N <= 0) return;
  const int64_t blocks = (g.N + kPackBlock - 1) / kPackBlock;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(g.num_threads, blocks)));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
    if constexpr (kLanesColumnPasses) {
      for (int64_t b = b0; b < b1; b += kLanesPassBlocks) {
        const int64_t nb = std::min<int64_t>(kLanesPassBlocks, b1 - b);
        const int64_t last_cols = std::min<int64_t>(kPackBlock, g.N - (b + nb - 1) * kPackBlock);
        const float* w = g.packed + b * g.K * kPackBlock;
        float* c = g.c + b * kPackBlock;
        if (nb == 3)
          lanes_column_passes<3>(w, g.K, g.a, g.lda, g.M, c, g.ldc, last_cols);
        else if (nb == 2)
          lanes_column_passes<2>(w, g.K, g.a, g.lda, g.M, c, g.ldc, last_cols);
        else
          lanes_column_passes<1>(w, g.K, g.a, g.lda, g.M, c, g.ldc, last_cols);
      }
    } else {
      lanes_rows_in_lanes(g, b0, b1);
    }
  }
}

const Kernels kKernels = {
    kIsa,
    &exp_array,
    &sigmoid_array,
    &tanh_array,
    {&elman_forward<false>, &elman_forward<true>, &lstm_forward, &gru_forward},
    {&elman_backward<false>, &elman_backward<true>, &lstm_backward, &gru_backward},
    &gate_major,
    &small_batch_forward,
    &projection_gate_major_for,
    &small_batch_backward,
    kLanesRowVecs * Vec::kLanes,
    &lanes_gemm,
};
