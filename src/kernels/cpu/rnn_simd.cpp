// Run-time choice of the instruction set for the vectorised kernels, and the
// weight packing they share.
#include "kernels/cpu/rnn_simd.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "kernels/cpu/bfloat16.h"

namespace rnnkit::kernels::cpu::simd {

// Defined in rnn_simd_avx512.cpp / rnn_simd_avx2.cpp.
const Kernels* avx512_kernels();
const Kernels* avx2_kernels();

namespace {

Isa isa_from_environment(Isa detected) {
  const char* env = std::getenv("RNNKIT_ISA");
  if (env == nullptr) return detected;
  const std::string v = env;
  Isa want = detected;
  if (v == "scalar") want = Isa::kScalar;
  if (v == "avx2") want = Isa::kAvx2;
  if (v == "avx512") want = Isa::kAvx512;
  return static_cast<int>(want) < static_cast<int>(detected) ? want : detected;
}

std::atomic<int>& active() {
  static std::atomic<int> isa{static_cast<int>(isa_from_environment(detected_isa()))};
  return isa;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kScalar: return "scalar";
  }
  return "?";
}

Isa detected_isa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
      return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kScalar;
  }();
  return isa;
}

bool bf16_dot_hardware() {
  static const bool has = [] {
    __builtin_cpu_init();
    return detected_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
}

Isa active_isa() { return static_cast<Isa>(active().load(std::memory_order_relaxed)); }

Isa set_active_isa(Isa isa) {
  const Isa capped = static_cast<int>(isa) < static_cast<int>(detected_isa()) ? isa : detected_isa();
  active().store(static_cast<int>(capped));
  return capped;
}

const Kernels* kernels(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) return nullptr;
  switch (isa) {
    case Isa::kAvx512: return avx512_kernels();
    case Isa::kAvx2: return avx2_kernels();
    case Isa::kScalar: return nullptr;
  }
  return nullptr;
}

const Kernels* active_kernels() { return kernels(active_isa()); }

int64_t packed_recurrent_size(int64_t G, int64_t H, int64_t K) {
  return (H + kPackBlock - 1) / kPackBlock * K * G * kPackBlock;
}

namespace {

// GCC 12's AVX-512 unpack and shuffle intrinsics pass an undefined vector as
// the unused merge source of their builtins, which -W(maybe-)uninitialized
// reports wherever they are inlined; nothing here reads an undefined lane.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Transposes a 16 x 16 tile of floats held in 16 registers: r[i][j] becomes
// r[j][i]. Four rounds: pairs of rows interleaved by 32 bits, then by 64 bits
// (each 128-bit lane then holds 4 rows of one column), then the lanes gathered
// across registers in two rounds of 128-bit shuffles.
__attribute__((target("avx512f"))) void transpose16x16(__m512 (&r)[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // r[4q + c], lane L: rows 4q .. 4q + 3 at column 4L + c.
  for (int q = 0; q < 16; q += 4) {
    const __m512d a = _mm512_castps_pd(t[q]), b = _mm512_castps_pd(t[q + 1]), c = _mm512_castps_pd(t[q + 2]),
                  d = _mm512_castps_pd(t[q + 3]);
    r[q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // Column 4L + c: lane L of r[c], r[4 + c], r[8 + c], r[12 + c].
  for (int c = 0; c < 4; ++c) {
    const __m512 lo01 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44);  // lanes 0, 1 of each
    const __m512 lo23 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
    const __m512 hi01 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);  // lanes 2, 3 of each
    const __m512 hi23 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
    t[c] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);
    t[4 + c] = _mm512_shuffle_f32x4(lo01, lo23, 0xDD);
    t[8 + c] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);
    t[12 + c] = _mm512_shuffle_f32x4(hi01, hi23, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// One whole 16 x 16 tile through registers: src's 16 rows (stride lds) of 16
// floats, their column kk written as 16 floats at dst + kk * ldd.
__attribute__((target("avx512f"))) void transpose_tile_avx512(const float* src, int64_t lds, float* dst,
                                                               int64_t ldd) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  transpose16x16(r);
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ldd, r[i]);
}

#pragma GCC diagnostic pop

// The same with AVX2, as four 8 x 8 tiles (units 0-7 and 8-15 by columns 0-7
// and 8-15), each transposed in 8 registers: unpacks, then 64-bit shuffles
// within 128-bit lanes, then the lanes exchanged.
__attribute__((target("avx2"))) void transpose_tile_avx2(const float* src, int64_t lds, float* dst, int64_t ldd) {
  for (int64_t half_u = 0; half_u < 16; half_u += 8)
    for (int64_t half_k = 0; half_k < 16; half_k += 8) {
      __m256 r[8], t[8], s[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + (half_u + i) * lds + half_k);
      for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
      }
      // s[4h + c], lane L: rows 4h .. 4h + 3 at column 4L + c.
      for (int h = 0; h < 8; h += 4) {
        s[h] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
        s[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xEE);
        s[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
        s[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
      }
      float* out = dst + half_k * ldd + half_u;
      for (int c = 0; c < 4; ++c) {
        _mm256_storeu_ps(out + c * ldd, _mm256_permute2f128_ps(s[c], s[4 + c], 0x20));
        _mm256_storeu_ps(out + (4 + c) * ldd, _mm256_permute2f128_ps(s[c], s[4 + c], 0x31));
      }
    }
}

}  // namespace

// Compiled for AVX-512, AVX2 and plain x86-64, chosen at load time.
__attribute__((target_clones("avx512f", "avx2", "default"))) void pack_recurrent_block(
    int64_t G, int64_t H, int64_t K, const float* w_hh, int64_t jb, float* dst, bool gate_major) {
  // A 16 x 16 tile at a time: 16 rows of w_hh (one gate's units of the block)
  // by 16 consecutive k, read row by row (one cache line each) and written
  // transposed. Reading column by column instead (16 rows, then the next k)
  // keeps 16 * G lines live whose addresses are K * 4 bytes apart, which for
  // power-of-two sizes fall into a few L1 sets and thrash (3 GB/s at H = 512).
  constexpr int64_t B = kPackBlock;
  alignas(64) float tile[B][B];
  // Whole tiles go through registers on the active instruction set (so that
  // tests reach each). The tiles of one k go across the gates, so that the
  // stores run in memory order. rnn_pack_weights on one thread of the
  // 2026-12-06 Xeon, before -> after (medians of 60): LSTM H = 128 20.0 -> 8.9
  // us (its 256 KB in L2), LSTM H = 512 411-446 -> 327, GRU H = 1024 1118-1206
  // -> 957-998, the lanes layout of Elman H = 1760 518-550 -> 457-490 (the
  // large ones bound by memory: each weight is read, and its packed line
  // fetched and written back); with the AVX2 code on the same CPU, LSTM H =
  // 128 20-21 -> 12-14 us, LSTM H = 512 381-440 -> 328-347, GRU H = 1024
  // 1228-1243 -> 1059-1096 (not measured on AMD cores). Packing inside a
  // forward (fwd* less fwd, as the bench measures it): lstm-512-4 0.33 -> 0.27
  // ms, lstm-512-1 0.29 -> 0.20, lstm-128-1 0.028 -> 0.009, rnn_relu-1760 1.34
  // -> 1.09.
  //
  // Each whole tile first requests its 16 rows' lines two tiles ahead: the
  // hardware prefetchers do not follow 16-64 row streams at once. Two Zen 5
  // threads packing the LSTM's W_hh from memory: H = 1024 0.63-0.69 -> 0.49-0.52
  // ms; H = 1500 1.67-1.69 -> 1.39-1.86; in cache (H = 512, 656) no change.
  constexpr int64_t kAhead = 2 * B;
  const Isa isa = active_isa();
  void (*const whole_tile)(const float*, int64_t, float*, int64_t) =
      isa == Isa::kAvx512 ? &transpose_tile_avx512 : isa == Isa::kAvx2 ? &transpose_tile_avx2 : nullptr;
  const int64_t units = std::min(B, H - jb * B);
  // Elements between consecutive k, and between consecutive gates.
  const int64_t k_step = gate_major ? B : G * B, g_step = gate_major ? K * B : B;
  for (int64_t k0 = 0; k0 < K; k0 += B) {
    const int64_t width = std::min(B, K - k0);
    for (int64_t g = 0; g < G; ++g) {
      const float* rows = w_hh + (g * H + jb * B) * K;
      if (units == B && width == B && whole_tile != nullptr) {
        if (k0 + kAhead < K)
          for (int64_t u = 0; u < B; ++u) __builtin_prefetch(rows + u * K + k0 + kAhead, 0, 3);
        whole_tile(rows + k0, K, dst + k0 * k_step + g * g_step, k_step);
        continue;
      }
      if (units == B && width == B) {
        for (int64_t u = 0; u < B; ++u)
          for (int64_t kk = 0; kk < B; ++kk) tile[u][kk] = rows[u * K + k0 + kk];
      } else {  // the last block's missing units are zeros; columns beyond width are not read
        for (int64_t u = 0; u < units; ++u)
          for (int64_t kk = 0; kk < width; ++kk) tile[u][kk] = rows[u * K + k0 + kk];
        for (int64_t u = units; u < B; ++u)
          for (int64_t kk = 0; kk < B; ++kk) tile[u][kk] = 0.f;
      }
      for (int64_t kk = 0; kk < width; ++kk) {
        float* out = dst + (k0 + kk) * k_step + g * g_step;
        for (int64_t u = 0; u < B; ++u) out[u] = tile[u][kk];
      }
    }
  }
}

void pack_recurrent(int64_t G, int64_t H, int64_t K, const float* w_hh, float* packed, int64_t block_begin,
                    int64_t block_end, bool gate_major) {
  for (int64_t jb = block_begin; jb < block_end; ++jb)
    pack_recurrent_block(G, H, K, w_hh, jb, packed + jb * K * G * kPackBlock, gate_major);
}

float* thread_scratch(size_t n) {
  struct Buffer {
    float* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  if (buffer.size < n) {
    std::free(buffer.data);
    buffer.data = nullptr;
    buffer.size = 0;
    const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    buffer.data = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (buffer.data == nullptr) throw std::bad_alloc();
    buffer.size = n;
  }
  return buffer.data;
}

int64_t recurrent_step_macs(const RnnLayerDims& dims) {
  return dims.batch * gate_count(dims.cell) * dims.hidden_size * dims.hidden_size;
}

int64_t lanes_packed_size(int64_t N, int64_t K) { return packed_recurrent_size(1, N, K); }

void pack_lanes(int64_t N, int64_t K, const float* w, int64_t ldw, bool w_is_kn, float* packed,
                int num_threads) {
  const int64_t blocks = (N + kPackBlock - 1) / kPackBlock;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, blocks)));
  // W [N, K] is the one-gate case of the small-batch layout ([K][1][16] per
  // block); W [K, N] already has each block's 16 columns side by side per k.
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t jb = 0; jb < blocks; ++jb) {
    if (!w_is_kn) {
      pack_recurrent(1, N, K, w, packed, jb, jb + 1, false);
      continue;
    }
    const int64_t n0 = jb * kPackBlock, cols = std::min(kPackBlock, N - n0);
    float* dst = packed + jb * K * kPackBlock;
    for (int64_t k = 0; k < K; ++k) {
      std::memcpy(dst + k * kPackBlock, w + k * ldw + n0, static_cast<size_t>(cols) * sizeof(float));
      std::fill(dst + k * kPackBlock + cols, dst + (k + 1) * kPackBlock, 0.f);
    }
  }
}

int64_t packed_recurrent_size_bf16(int64_t G, int64_t H, int64_t K) {
  return (H + kPackBlock - 1) / kPackBlock * ((K + 1) / 2 * 2) * G * kPackBlock;
}

void pack_recurrent_block_bf16(int64_t G, int64_t H, int64_t K, const float* w_hh, int64_t jb, uint16_t* dst,
                               bool gate_major) {
  const int64_t pairs = (K + 1) / 2;
  constexpr int64_t kPair = 2 * kPackBlock;  // values per gate and pair of k
  const int64_t units = std::min(kPackBlock, H - jb * kPackBlock);
  for (int64_t k = 0; k < K; k += 2)
    for (int64_t g = 0; g < G; ++g) {
      const float* src = w_hh + (g * H + jb * kPackBlock) * K + k;
      // [K/2][G][16][2], or [G][K/2][16][2] gate-major.
      uint16_t* out = dst + (gate_major ? g * pairs + k / 2 : k / 2 * G + g) * kPair;
      for (int64_t u = 0; u < kPackBlock; ++u)
        for (int64_t e = 0; e < 2; ++e)
          out[2 * u + e] = u < units && k + e < K ? bfloat16_bits(src[u * K + e]) : uint16_t{0};
    }
}

void pack_recurrent_bf16(int64_t G, int64_t H, int64_t K, const float* w_hh, uint16_t* packed,
                         bool gate_major) {
  const int64_t blocks = (H + kPackBlock - 1) / kPackBlock;
  const int64_t block = (K + 1) / 2 * 2 * G * kPackBlock;
  for (int64_t jb = 0; jb < blocks; ++jb)
    pack_recurrent_block_bf16(G, H, K, w_hh, jb, packed + jb * block, gate_major);
}

}  // namespace rnnkit::kernels::cpu::simd
