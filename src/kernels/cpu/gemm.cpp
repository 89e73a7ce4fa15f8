#include "kernels/cpu/gemm.h"
#include "kernels/cpu/onednn.h"

#include <dnnl.h>
#include <omp.h>

#include <dnnl.hpp>
#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <tuple>
#include <vector>

#include "rnnkit/error.h"
#include "rnnkit/threading.h"

#ifdef RNNKIT_HAVE_ONEDNN_PACKED_SGEMM
// oneDNN's packed sgemm, column-major like dnnl_sgemm: sgemm_pack copies one
// operand into the layout its kernels read (sized by sgemm_pack_get_size for
// oneDNN's thread count at the time), and sgemm_compute multiplies with that
// operand marked 'P'. libdnnl exports these (its RNN primitive runs its per-step
// products with them) but installs no header for them; CMakeLists.txt checks
// that this oneDNN links them before defining RNNKIT_HAVE_ONEDNN_PACKED_SGEMM.
namespace dnnl::impl::cpu {
dnnl_status_t sgemm_pack_get_size(const char* identifier, const char* transa, const char* transb,
                                  const dnnl_dim_t* M, const dnnl_dim_t* N, const dnnl_dim_t* K,
                                  const dnnl_dim_t* lda, const dnnl_dim_t* ldb, size_t* size, bool* pack);
dnnl_status_t sgemm_pack(const char* identifier, const char* transa, const char* transb, const dnnl_dim_t* M,
                         const dnnl_dim_t* N, const dnnl_dim_t* K, const dnnl_dim_t* lda, const dnnl_dim_t* ldb,
                         const float* src, float* dst);
dnnl_status_t sgemm_compute(const char* transa, const char* transb, const dnnl_dim_t* M, const dnnl_dim_t* N,
                            const dnnl_dim_t* K, const float* A, const dnnl_dim_t* lda, const float* B,
                            const dnnl_dim_t* ldb, const float* beta, float* C, const dnnl_dim_t* ldc);
}  // namespace dnnl::impl::cpu
#endif

namespace rnnkit::kernels::cpu {

namespace onednn {

void use_rnnkit_threads() {
  const int nthreads = rnnkit::get_num_threads();
  if (omp_get_max_threads() != nthreads) omp_set_num_threads(nthreads);
}

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

void* thread_buffer(int slot, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[kThreadBuffers];
  RNNKIT_CHECK(slot >= 0 && slot < kThreadBuffers, "thread_buffer: internal error, slot ", slot);
  Buffer& buffer = buffers[slot];
  if (buffer.size < bytes) {
    std::free(buffer.data);
    buffer.data = nullptr;
    buffer.size = 0;
    const size_t size = (bytes + 63) / 64 * 64;
    buffer.data = std::aligned_alloc(64, size);
    if (buffer.data == nullptr) throw std::bad_alloc();
    buffer.size = size;
  }
  return buffer.data;
}

dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

}  // namespace onednn

namespace {

using onednn::cpu_engine;
using onednn::thread_buffer;
using onednn::thread_stream;
using onednn::use_rnnkit_threads;

using dnnl::memory;

// A cached matmul primitive, C[M, N] (+)= A[M, K] B, with its operands
// descriptors (`weights` is B's: for packed_gemm the primitive's choice of
// layout). The primitive takes its scratchpad from the caller (scratchpad_mode::user), so
// that two threads may execute it at once (the two directions of a
// bidirectional layer do): a library-owned scratchpad would be shared.
struct MatmulEntry {
  dnnl::matmul primitive;
  memory::desc a, weights, c, scratchpad;
  bool brgemm = false;  // oneDNN runs it with its brgemm kernel (AVX-512 machines)
  std::string impl;     // oneDNN's name of the implementation
};

void* thread_scratchpad(size_t bytes) { return thread_buffer(onednn::kScratchpadBuffer, bytes); }

// make_matmul for the thread count that OpenMP gives the calling thread now,
// which oneDNN sizes the primitive's work split by.
std::unique_ptr<MatmulEntry> make_matmul_here(const memory::desc& a, const memory::desc& b,
                                              const memory::desc& c, bool accumulate, bool brgemm_only) {
  try {
    dnnl::post_ops sum;
    if (accumulate) sum.append_sum(1.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(sum);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, cpu_engine());
    const bool brgemm = std::string(pd.impl_info_str()).rfind("brg", 0) == 0;
    if (brgemm_only && !brgemm) return nullptr;
    auto entry = std::make_unique<MatmulEntry>();
    entry->brgemm = brgemm;
    entry->impl = pd.impl_info_str();
    entry->a = a;
    entry->c = c;
    entry->weights = pd.weights_desc();
    entry->scratchpad = pd.scratchpad_desc();
    entry->primitive = dnnl::matmul(pd);
    return entry;
  } catch (const dnnl::error&) {
    return nullptr;
  }
}

// The primitive C (+)= A B for these descriptors (weights: B's, `any` lets oneDNN
// choose), with a user scratchpad, for rnnkit's thread count; null when oneDNN
// cannot make it, or, with brgemm_only, when it would not use its brgemm kernel.
std::unique_ptr<MatmulEntry> make_matmul(const memory::desc& a, const memory::desc& b, const memory::desc& c,
                                         bool accumulate, bool brgemm_only = false) {
  use_rnnkit_threads();
  return make_matmul_here(a, b, c, accumulate, brgemm_only);
}

// A process-wide cache of primitives by shape: the entry for key, made by
// make() under the cache's lock on first use. A null entry (no such primitive)
// is kept as such with keep_null, else made again at the next call.
template <class... Key>
class MatmulCache {
 public:
  template <class Make>
  const MatmulEntry* get(const std::tuple<Key...>& key, bool keep_null, Make&& make) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = cache_.find(key);
    if (found != cache_.end() && (found->second != nullptr || keep_null)) return found->second.get();
    return (cache_[key] = make()).get();
  }

 private:
  std::mutex mutex_;
  std::map<std::tuple<Key...>, std::unique_ptr<MatmulEntry>> cache_;
};

// C += A B, or with accumulate = false C = A B. Returns null when oneDNN cannot
// make the primitive.
const MatmulEntry* matmul_entry(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldc,
                                bool accumulate = true) {
  static MatmulCache<int64_t, int64_t, int64_t, int64_t, int64_t, int, bool> cache;
  // oneDNN sizes its work split when it creates the primitive: one per thread count.
  const int nthreads = rnnkit::get_num_threads();
  // A null entry is retried next time: rare, and cheap.
  return cache.get({M, N, K, lda, ldc, nthreads, accumulate}, false, [&] {
    return make_matmul(memory::desc({M, K}, memory::data_type::f32, memory::dims{lda, 1}),
                       memory::desc({K, N}, memory::data_type::f32, memory::format_tag::any),
                       memory::desc({M, N}, memory::data_type::f32, memory::dims{ldc, 1}), accumulate);
  });
}

// C[M, N] += A^T B with A [K, M], M >= 1024 and N <= 512: a weight gradient,
// dW += dgates^T x over the rows of a sequence. oneDNN 2.6's sgemm runs this
// shape well below its speed on untransposed operands; its brgemm matmul, which
// reads A transposed through its strides, does better (lstm H = 512, N = 64,
// T = 25 on 2 cores: dW_ih 15.5 -> 14.2 ms, dW_hh 13.8 -> 11.8 ms per backward;
// 1024 x 256 and 1536 x 512 shapes 15-35% faster alone). The matmul takes K in
// steps of kWeightGradK (one primitive per shape, whatever the sequence length),
// the rest of K by sgemm. Wider or shorter shapes gain nothing (1760 x 1760,
// 4096 x 1024: 5-10% slower) and stay with sgemm. Returns false, doing nothing,
// for other shapes or when oneDNN has no brgemm matmul for these strides. With
// beta = 0 (a gradient written, not accumulated) C is zeroed first, as the
// primitive accumulates.
constexpr int64_t kWeightGradK = 512;

// The weight-gradient primitive for K = kWeightGradK (A [K, M] read transposed
// through its strides); null, cached as such, where oneDNN would not use brgemm.
const MatmulEntry* weight_gradient_matmul(int64_t M, int64_t N, int64_t lda, int64_t ldb, int64_t ldc) {
  static MatmulCache<int64_t, int64_t, int64_t, int64_t, int64_t, int> cache;
  const int nthreads = rnnkit::get_num_threads();
  return cache.get({M, N, lda, ldb, ldc, nthreads}, true, [&] {
    return make_matmul(memory::desc({M, kWeightGradK}, memory::data_type::f32, memory::dims{1, lda}),
                       memory::desc({kWeightGradK, N}, memory::data_type::f32, memory::dims{ldb, 1}),
                       memory::desc({M, N}, memory::data_type::f32, memory::dims{ldc, 1}), true, true);
  });
}

// C (+)= A B with e; B in e's weights layout.
void execute(const MatmulEntry& e, const void* A, const void* B, float* C) {
  use_rnnkit_threads();
  memory a(e.a, cpu_engine(), const_cast<void*>(A));
  memory w(e.weights, cpu_engine(), const_cast<void*>(B));
  memory c(e.c, cpu_engine(), C);
  const size_t scratch_bytes = e.scratchpad.get_size();
  memory scratch(e.scratchpad, cpu_engine(), scratch_bytes > 0 ? thread_scratchpad(scratch_bytes) : nullptr);
  dnnl::stream& stream = thread_stream();
  e.primitive.execute(stream, {{DNNL_ARG_SRC, a},
                               {DNNL_ARG_WEIGHTS, w},
                               {DNNL_ARG_DST, c},
                               {DNNL_ARG_SCRATCHPAD, scratch}});
  stream.wait();
}

bool weight_gradient_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                          int64_t ldc) {
  if (!trans_a || trans_b || alpha != 1.0f || (beta != 1.0f && beta != 0.0f) || N > 512 || M < 1024 ||
      K < kWeightGradK)
    return false;
  const MatmulEntry* e = weight_gradient_matmul(M, N, lda, ldb, ldc);
  if (e == nullptr) return false;
  if (beta == 0.0f)
    for (int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, static_cast<size_t>(N) * sizeof(float));
  int64_t k0 = 0;
  for (; k0 + kWeightGradK <= K; k0 += kWeightGradK) execute(*e, A + k0 * lda, B + k0 * ldb, C);
  if (k0 < K) {
    const dnnl_status_t st = dnnl_sgemm('T', 'N', M, N, K - k0, 1.0f, A + k0 * lda, lda, B + k0 * ldb,
                                        ldb, 1.0f, C, ldc);
    RNNKIT_CHECK(st == dnnl_success, "gemm: oneDNN sgemm failed with status ", int(st));
  }
  return true;
}

// C = alpha A^T B + beta C with A [K, M] whose row stride lda is a multiple of
// 256 floats (1 KiB). oneDNN 2.6's AVX2 sgemm packs such an A at a fraction of
// its speed (its rows alias in the cache sets), a shape every weight gradient
// dW = dY^T X of 512, 1024, ... outputs has. Measured on Zen 3, 2 threads,
// K = 3200: M = 1024, N = 128: 74 GFLOP/s, 116 with lda = M + 16; M = 1024,
// N = 256: 76 -> 158; M = 512, N = 256: 118 -> 159; M = 256 gained nothing
// after the copy, nor N below 128, nor M = 1024, N = 512 (171 -> 181 alone).
// So, for M >= 512 and 128 <= N <= 512, A goes through a copy with rows of
// M + 16 floats, kPaddedK rows at a time, each block one sgemm (the blocks
// after the first accumulating). Returns false, doing nothing, for other shapes.
constexpr int64_t kPaddedK = 512;
bool padded_transposed_a_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                              int64_t ldc) {
  if (!trans_a || lda % 256 != 0 || M < 512 || N < 128 || N > 512 || K < 2 * kPaddedK) return false;
  const int64_t ldp = M + 16;
  float* padded = static_cast<float*>(thread_buffer(onednn::kPaddedCopyBuffer, static_cast<size_t>(kPaddedK * ldp) * sizeof(float)));
  const int nthreads = rnnkit::get_num_threads();
  for (int64_t k0 = 0; k0 < K; k0 += kPaddedK) {
    const int64_t kc = std::min(kPaddedK, K - k0);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t k = 0; k < kc; ++k)
      std::memcpy(padded + k * ldp, A + (k0 + k) * lda, static_cast<size_t>(M) * sizeof(float));
    const float* b = B + (trans_b ? k0 : k0 * ldb);
    const dnnl_status_t st = dnnl_sgemm('T', trans_b ? 'T' : 'N', M, N, kc, alpha, padded, ldp, b, ldb,
                                        k0 == 0 ? beta : 1.0f, C, ldc);
    RNNKIT_CHECK(st == dnnl_success, "gemm: oneDNN sgemm failed with status ", int(st));
  }
  return true;
}

// dnnl_sgemm, row-major, on rnnkit's thread count (one thread inside any
// parallel region: gemm_on_this_thread calls it there directly, and oneDNN
// would otherwise start a nested team inside a one-thread team's region, whose
// sums round differently on AVX2 than one thread's).
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  use_rnnkit_threads();
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                      beta, C, ldc);
  RNNKIT_CHECK(st == dnnl_success, "gemm: oneDNN sgemm failed with status ", int(st), " (M=", M, ", N=", N,
               ", K=", K, ", lda=", lda, ", ldb=", ldb, ", ldc=", ldc, ")");
}

// C[M, N] (+)= A[M, K] W^T with W [N, K] as it is (row stride ldb): every
// input projection (x W_ih^T over a sequence's rows) and Linear layer. oneDNN
// 2.6's sgemm packs such a W slowly when its rows are 2 KiB apart or a multiple
// of that (they alias in the cache sets): on two Zen 5 cores, GFLOP/s sgemm /
// brgemm matmul reading W through its strides, N x K = 1024 x 1024: M = 100
// 168 / 434, 400 357 / 484, 600-900 324-360 / 428-443, 1200 499 / 493; 1024 x
// 2048 M = 600-900 322-363 / 445-483; 2048 x 2048 M = 600 314 / 465 but 700-900
// 477-488 / 457-477. From 16 to 512 rows the matmul wins on any size (1760 x
// 1760 M = 100 375 / 464; 25 rows 2-5x: 62-216 / 241-327); from 640 rows on
// other sizes sgemm does (4096 x 1024 M = 640-1200 467-475 / 427-442, 1760 x
// 1760 M = 800 468 / 454). Below 16 rows sgemm takes another kernel that
// needs no packing and beats the primitive's call (M = 1 / 4 / 12 / 15 against
// 1024 x 1024: 24 / 48 / 120 / 148 us, matmul 77 / 76 / 113 / 124; at 16
// rows sgemm packs: 958 us, matmul 130). Hence the matmul for 16 to 512 rows,
// and from 512 to 1023 for N <= 1024 with ldb a multiple of 512 floats,
// wherever oneDNN runs it with brgemm (AVX-512; strided C falls back to a
// slower kernel, so the GRU's projection into 4H-wide rows stays with sgemm).
// The choice rests on the shape alone: a layer's products must sum in the same
// order whether they run on the whole team or, inside a parallel region (a
// stacked layer's wavefront), on one thread, where a primitive made for one
// thread takes them (brgemm's order for an element does not depend on the
// thread count the primitive was made for: RnnKernels.PlainWeightsGemmSameBits).
bool plain_weights_matmul_shape(int64_t M, int64_t N, int64_t ldb) {
  return M >= 16 && (M <= 512 || (M < 1024 && N <= 1024 && ldb % 512 == 0));
}

// The primitives are made once per shape (about 0.1 ms each) and kept, as
// matmul_entry's are. A sequence's row count varies from batch to batch
// (packed or padded sequences), so from 128 rows on the matmul takes them in
// whole multiples of 16 and sgemm's small-M kernel the rest, at most 15 rows
// (1024 x 1024: 263 rows 1.23-1.24 ms against 1.21-1.22 for one matmul, 600
// rows 2.82-2.86 against 2.74-2.76; below 128 rows that second read of W costs
// more, 25 x 2048 x 512 0.26 ms against 0.20, and those keep their own
// primitives): at most 112 + 56 primitives per layer shape.
constexpr int64_t kPlainMatmulRowStep = 16, kPlainMatmulExactRows = 128;
int64_t plain_matmul_rows(int64_t M) {
  return M < kPlainMatmulExactRows ? M : M / kPlainMatmulRowStep * kPlainMatmulRowStep;
}

// The primitive for M rows, made for rnnkit's thread count or, with
// one_thread, for one thread; null, cached as such, where oneDNN would not use
// brgemm.
const MatmulEntry* plain_weights_entry(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
                                       bool accumulate, bool one_thread) {
  static MatmulCache<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, bool> cache;
  const int nthreads = one_thread ? 1 : rnnkit::get_num_threads();
  return cache.get({M, N, K, lda, ldb, ldc, nthreads, accumulate}, true, [&] {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(nthreads);
    auto entry = make_matmul_here(memory::desc({M, K}, memory::data_type::f32, memory::dims{lda, 1}),
                                  memory::desc({K, N}, memory::data_type::f32, memory::dims{1, ldb}),
                                  memory::desc({M, N}, memory::data_type::f32, memory::dims{ldc, 1}), accumulate,
                                  true);
    omp_set_num_threads(saved);
    return entry;
  });
}

bool plain_weights_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                        int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (trans_a || !trans_b || alpha != 1.0f || (beta != 0.0f && beta != 1.0f) ||
      !plain_weights_matmul_shape(M, N, ldb))
    return false;
  const int64_t rows = plain_matmul_rows(M);
  const MatmulEntry* e = plain_weights_entry(rows, N, K, lda, ldb, ldc, beta == 1.0f, omp_in_parallel() != 0);
  if (e == nullptr) return false;
  execute(*e, A, B, C);
  if (rows < M) sgemm(false, true, M - rows, N, K, alpha, A + rows * lda, lda, B, ldb, beta, C + rows * ldc, ldc);
  return true;
}

}  // namespace

bool gemm_takes_plain_matmul(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  return M > 0 && N > 0 && K > 0 && plain_weights_matmul_shape(M, N, ldb) &&
         plain_weights_entry(plain_matmul_rows(M), N, K, lda, ldb, ldc, false, false) != nullptr;
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  use_rnnkit_threads();
  if (weight_gradient_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  if (padded_transposed_a_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  if (plain_weights_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

namespace {

// The brgemm matmul C[M, N] = A[M, K] W^T (W [N, K], row stride ldw) into a
// dense C, made for one thread; null, cached as such, where oneDNN would not
// use brgemm (CPUs without AVX-512).
const MatmulEntry* this_thread_matmul(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldw) {
  static MatmulCache<int64_t, int64_t, int64_t, int64_t, int64_t> cache;
  return cache.get({M, N, K, lda, ldw}, true, [&] {
    // A primitive made for more threads splits its work among them when it
    // runs, and inside a parallel region only the first share would be computed.
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    auto entry = make_matmul_here(memory::desc({M, K}, memory::data_type::f32, memory::dims{lda, 1}),
                                  memory::desc({K, N}, memory::data_type::f32, memory::dims{1, ldw}),
                                  memory::desc({M, N}, memory::data_type::f32, memory::dims{N, 1}), false, true);
    omp_set_num_threads(saved);
    return entry;
  });
}

}  // namespace

bool prefer_this_thread_matmul(int64_t M, int64_t N, int64_t K) { return M >= 16 && M <= 32 && N * K >= 512 * 512; }

namespace {

// The bfloat16 matmul C = A W^T for these shapes and strides (W [N, K] read
// transposed through its strides), where oneDNN runs it with its brgemm kernel
// for bfloat16 (null, cached as such, elsewhere).
const MatmulEntry* bf16_matmul(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldw, int64_t ldc) {
  static MatmulCache<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int> cache;
  const int nthreads = rnnkit::get_num_threads();
  return cache.get({M, N, K, lda, ldw, ldc, nthreads}, true, [&]() -> std::unique_ptr<MatmulEntry> {
    auto e = make_matmul(memory::desc({M, K}, memory::data_type::bf16, memory::dims{lda, 1}),
                         memory::desc({K, N}, memory::data_type::bf16, memory::dims{1, ldw}),
                         memory::desc({M, N}, memory::data_type::f32, memory::dims{ldc, 1}), false, true);
    // (A brgemm that is not the bfloat16 one widens in software: no gain.)
    if (e == nullptr || e->impl.find("bf16") == std::string::npos) return nullptr;
    return e;
  });
}

}  // namespace

std::atomic<int64_t> g_bf16_gemm_calls{0};

bool bf16_gemm(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* W, int64_t ldw,
               float* C, int64_t ldc) {
  if (M <= 0 || N <= 0 || K <= 0) return false;
  const MatmulEntry* e = bf16_matmul(M, N, K, lda, ldw, ldc);
  if (e == nullptr) return false;
  execute(*e, A, W, C);
  g_bf16_gemm_calls.fetch_add(1, std::memory_order_relaxed);
  return true;
}

int64_t bf16_gemm_calls() { return g_bf16_gemm_calls.load(std::memory_order_relaxed); }

bool bf16_gemm_available() {
  static const bool available = bf16_matmul(16, 16, 32, 32, 32, 16) != nullptr;
  return available;
}

void gemm_on_this_thread(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* W,
                         int64_t ldw, float* C, int64_t ldc, bool matmul) {
  const MatmulEntry* e = matmul && M > 0 && N > 0 && K > 0 ? this_thread_matmul(M, N, K, lda, ldw) : nullptr;
  if (e == nullptr) {
    // sgemm itself, not gemm: gemm's choice between sgemm and the matmul rests
    // on N too, and the shares of one product must not take different ones.
    if (K == 0)
      gemm(false, true, M, N, K, 1.0f, A, lda, W, ldw, 0.0f, C, ldc);  // zeros
    else if (M > 0 && N > 0)
      sgemm(false, true, M, N, K, 1.0f, A, lda, W, ldw, 0.0f, C, ldc);
    return;
  }
  float* dense = static_cast<float*>(thread_buffer(onednn::kDenseCopyBuffer, static_cast<size_t>(M * N) * sizeof(float)));
  execute(*e, A, W, dense);
  for (int64_t r = 0; r < M; ++r) std::memcpy(C + r * ldc, dense + r * N, static_cast<size_t>(N) * sizeof(float));
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc) {
  // Row i of C accumulates in a local buffer so that beta is applied once.
  std::vector<double> acc(static_cast<size_t>(N));
#pragma omp parallel for schedule(static) firstprivate(acc) num_threads(rnnkit::get_num_threads()) \
    if (M * N * K > 32768)
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) acc[j] = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      const double a = trans_a ? A[k * lda + i] : A[i * lda + k];
      if (!trans_b) {
        const double* b = B + k * ldb;
        for (int64_t j = 0; j < N; ++j) acc[j] += a * b[j];
      } else {
        for (int64_t j = 0; j < N; ++j) acc[j] += a * B[j * ldb + k];
      }
    }
    double* c = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) c[j] = alpha * acc[j] + (beta == 0.0 ? 0.0 : beta * c[j]);
  }
}

namespace {

// How packed_gemm multiplies for (M, N, K). On machines where oneDNN runs its
// matmul with the brgemm kernel (AVX-512), by that primitive with the weights in
// its blocked layout. Elsewhere (AVX2) the matmul would be plain sgemm, which
// re-packs the weights at every call: there by oneDNN's packed sgemm, the
// routines its own RNN primitive uses (per-step products on 2 Zen 3 cores, in
// GFLOP/s, sgemm -> packed: 128 x 4096 x 1024 157 -> 173, 64 x 2048 x 512 173
// -> 184, 16 x 1760 x 1760 127 -> 140, 4 x 2048 x 512 69 -> 106).
enum class Packing { kNone, kMatmul, kSgemm };

Packing packing_for(int64_t M, int64_t N, int64_t K, const MatmulEntry** entry) {
  const MatmulEntry* e = matmul_entry(M, N, K, K, N);
  *entry = e;
  if (e != nullptr && e->brgemm) return Packing::kMatmul;
#ifdef RNNKIT_HAVE_ONEDNN_PACKED_SGEMM
  return Packing::kSgemm;
#else
  return e != nullptr ? Packing::kMatmul : Packing::kNone;
#endif
}

#ifdef RNNKIT_HAVE_ONEDNN_PACKED_SGEMM
// Row-major C[M, N] += A[M, K] op(W) is column-major C^T = op(W)^T A^T: the
// packed operand is the first one, op(W)^T [N, K], which is W [N, K] row-major
// read transposed ('T', C = A W^T) or W [K, N] row-major as it is ('N', C = A W).
// Bytes of the packed copy; 0 if oneDNN has no packed sgemm for these sizes.
size_t sgemm_packed_bytes(int64_t M, int64_t N, int64_t K, bool w_is_kn) {
  use_rnnkit_threads();
  const char id = 'A', transa = w_is_kn ? 'N' : 'T', transb = 'N';
  const dnnl_dim_t ldw = w_is_kn ? N : K, lda = K;
  size_t bytes = 0;
  if (dnnl::impl::cpu::sgemm_pack_get_size(&id, &transa, &transb, &N, &M, &K, &ldw, &lda, &bytes, nullptr) !=
      dnnl_success)
    return 0;
  return bytes;
}
#endif

}  // namespace

int64_t packed_gemm_size(int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0) return 0;
  const MatmulEntry* e = nullptr;
  switch (packing_for(M, N, K, &e)) {
    case Packing::kNone:
      return 0;
    case Packing::kMatmul:
      return static_cast<int64_t>((e->weights.get_size() + sizeof(float) - 1) / sizeof(float));
    case Packing::kSgemm:
#ifdef RNNKIT_HAVE_ONEDNN_PACKED_SGEMM
    {
      // Room for W in either orientation (the size does not depend on it in
      // oneDNN 2.6; the larger is taken in case another version differs).
      const size_t bytes = std::max(sgemm_packed_bytes(M, N, K, false), sgemm_packed_bytes(M, N, K, true));
      return static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float));
    }
#endif
      break;
  }
  return 0;
}

bool packed_gemm_pack(int64_t M, int64_t N, int64_t K, const float* W, int64_t ldw, bool w_is_kn,
                      float* packed, int64_t capacity) {
  const MatmulEntry* e = nullptr;
  const Packing packing = packing_for(M, N, K, &e);
#ifdef RNNKIT_HAVE_ONEDNN_PACKED_SGEMM
  if (packing == Packing::kSgemm) {
    const size_t bytes = sgemm_packed_bytes(M, N, K, w_is_kn);
    if (bytes == 0 || bytes > static_cast<size_t>(capacity) * sizeof(float)) return false;
    const char id = 'A', transa = w_is_kn ? 'N' : 'T', transb = 'N';
    const dnnl_dim_t ld = ldw, lda = K;
    return dnnl::impl::cpu::sgemm_pack(&id, &transa, &transb, &N, &M, &K, &ld, &lda, W, packed) == dnnl_success;
  }
#endif
  if (packing != Packing::kMatmul || e->weights.get_size() > static_cast<size_t>(capacity) * sizeof(float))
    return false;
  use_rnnkit_threads();
  // B [K, N]: W itself (strides (ldw, 1)), or W [N, K] transposed (strides (1, ldw)).
  const memory::desc user({K, N}, memory::data_type::f32,
                          w_is_kn ? memory::dims{ldw, 1} : memory::dims{1, ldw});
  memory from(user, cpu_engine(), const_cast<float*>(W));
  memory to(e->weights, cpu_engine(), packed);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const dnnl::reorder::primitive_desc pd(from, to, attr);
  const size_t scratch_bytes = pd.scratchpad_desc().get_size();
  memory scratch(pd.scratchpad_desc(), cpu_engine(), scratch_bytes > 0 ? thread_scratchpad(scratch_bytes) : nullptr);
  dnnl::stream& stream = thread_stream();
  dnnl::reorder(pd).execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, scratch}});
  stream.wait();
  return true;
}

namespace {

// dst[i * ldd + j] = src[i * lds + j] for i < rows, j < cols; rows in parallel
// when there is enough to copy.
void copy_rows(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd) {
  const size_t bytes = static_cast<size_t>(cols) * sizeof(float);
#pragma omp parallel for schedule(static) num_threads(rnnkit::get_num_threads()) \
    if (rnnkit::get_num_threads() > 1 && rows * cols >= (int64_t{1} << 16))
  for (int64_t i = 0; i < rows; ++i) std::memcpy(dst + i * ldd, src + i * lds, bytes);
}

// dst[i * ldd + j] += src[i * lds + j] for i < rows, j < cols.
void add_rows(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd) {
#pragma omp parallel for schedule(static) num_threads(rnnkit::get_num_threads()) \
    if (rnnkit::get_num_threads() > 1 && rows * cols >= (int64_t{1} << 16))
  for (int64_t i = 0; i < rows; ++i) {
    const float* s = src + i * lds;
    float* d = dst + i * ldd;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) d[j] += s[j];
  }
}

}  // namespace

bool packed_gemm_takes_strides(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldc) {
  const MatmulEntry* dense = nullptr;
  if (packing_for(M, N, K, &dense) != Packing::kMatmul || (lda == K && ldc == N)) return true;
  const MatmulEntry* e = matmul_entry(M, N, K, lda, ldc);
  return e != nullptr && e->weights == dense->weights;
}

void packed_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* packed,
                 const float* W, int64_t ldw, bool w_is_kn, float* C, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  const MatmulEntry* dense = nullptr;
  const Packing packing = packing_for(M, N, K, &dense);
  const float beta = accumulate ? 1.0f : 0.0f;
#ifdef RNNKIT_HAVE_ONEDNN_PACKED_SGEMM
  if (packing == Packing::kSgemm) {
    // Any strides: the packed operand carries its own layout (and the thread
    // split it was packed for, which oneDNN keeps whatever the team it runs on).
    use_rnnkit_threads();
    const char transa = 'P', transb = 'N';
    const dnnl_dim_t ld = ldw, ld_a = lda, ld_c = ldc;
    const dnnl_status_t st = dnnl::impl::cpu::sgemm_compute(&transa, &transb, &N, &M, &K, packed, &ld, A, &ld_a,
                                                            &beta, C, &ld_c);
    RNNKIT_CHECK(st == dnnl_success, "packed_gemm: oneDNN sgemm_compute failed with status ", int(st),
                 " (M=", M, ", N=", N, ", K=", K, ")");
    return;
  }
#endif
  if (packing != Packing::kMatmul) {
    gemm(false, !w_is_kn, M, N, K, 1.0f, A, lda, W, ldw, beta, C, ldc);
    return;
  }
  // The primitive for these strides, if it reads the weights in the layout they
  // were packed in.
  const auto sharing = [&](int64_t ld_a, int64_t ld_c, bool sum) {
    const MatmulEntry* e = ld_a == K && ld_c == N && sum ? dense : matmul_entry(M, N, K, ld_a, ld_c, sum);
    return e != nullptr && e->weights == dense->weights ? e : nullptr;
  };
  if (const MatmulEntry* e = sharing(lda, ldc, accumulate)) {
    execute(*e, A, packed, C);
    return;
  }
  // With a row stride other than the width, oneDNN 2.6 falls back from its
  // brgemm matmul to a slower kernel with another weights layout (the GRU's
  // gates rows, a bidirectional layer's y: 1.2-3.8x slower per step, measured).
  // Strided operands go through dense copies instead, which cost a few percent:
  // A copied, and the product made apart and added to C (the same single
  // rounding of each sum as the accumulating primitive's).
  const int64_t a_elems = lda != K ? M * K : 0;
  const int64_t c_elems = ldc != N ? M * N : 0;
  float* stage = static_cast<float*>(thread_buffer(onednn::kDenseCopyBuffer, static_cast<size_t>(a_elems + c_elems) * sizeof(float)));
  const float* a_dense = A;
  if (lda != K) {
    copy_rows(M, K, A, lda, stage, K);
    a_dense = stage;
  }
  const MatmulEntry* product = sharing(K, N, false);
  float* c_dense = ldc == N ? C : stage + a_elems;
  if (product != nullptr && (ldc != N || !accumulate)) {
    execute(*product, a_dense, packed, c_dense);
    if (ldc != N) (accumulate ? add_rows : copy_rows)(M, N, c_dense, N, C, ldc);
    return;
  }
  if (accumulate) {
    if (ldc != N) copy_rows(M, N, C, ldc, c_dense, N);
  } else {
    for (int64_t i = 0; i < M; ++i) std::fill_n(c_dense + i * N, N, 0.0f);
  }
  execute(*dense, a_dense, packed, c_dense);
  if (ldc != N) copy_rows(M, N, c_dense, N, C, ldc);
}

}  // namespace rnnkit::kernels::cpu
