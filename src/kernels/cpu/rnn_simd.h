#pragma once
// Vectorised float32 kernels of the recurrent layer, compiled once per instruction
// set (rnn_simd_avx512.cpp, rnn_simd_avx2.cpp) from one template body
// (rnn_simd_impl.h) and picked at run time from what the CPU supports, so the
// binary stays portable (no -march=native). Internal to the kernel layer.
//
// What is here: exp/sigmoid/tanh over arrays; the fused pointwise pass of every
// cell, forward and backward, over a slice of one row (same math and argument
// conventions as the scalar cells of rnn_pointwise.h); and the small-batch
// forward, a persistent loop over the whole sequence (see rnn_simd_impl.h).
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/rnn.h"

namespace rnnkit::kernels::cpu::simd {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);
// The widest instruction set of this CPU that rnnkit has kernels for.
Isa detected_isa();
// The one in use: detected_isa(), lowered by the environment variable
// RNNKIT_ISA=scalar|avx2|avx512 read once, or by set_active_isa.
Isa active_isa();
// For tests and benchmarks: use isa from now on, capped at detected_isa().
// Returns the one now in use.
Isa set_active_isa(Isa isa);

// Pointwise pass over units [0, n) of one row: gates and bias (the cell's bias
// row) point at unit 0 of the first gate block, the gate blocks are H apart;
// h_prev, c_prev, c, h, dh_*, dc point at unit 0 of their rows. Semantics as the
// scalar cells (rnn_pointwise.h).
using RowForward = void (*)(int64_t n, int64_t H, float* gates, const float* bias,
                            const float* h_prev, const float* c_prev, float* c, float* h,
                            bool training);
using RowBackward = void (*)(int64_t n, int64_t H, const float* gates, const float* h_prev,
                             const float* c_prev, const float* c, const float* dh_a,
                             const float* dh_b, float* dh_direct, float* dc, float* dgates);
// y[i] = f(x[i]) for i < n; x and y may be equal.
using ArrayFn = void (*)(int64_t n, const float* x, float* y);

// Multiply-adds of one step's recurrent product at the full batch, N * G * H^2:
// the size by which rnn.cpp chooses the small-batch paths' batches and the
// kernels their thread counts (defined apart from the instruction-set files).
int64_t recurrent_step_macs(const RnnLayerDims& dims);

// Units per block of the packed recurrent weights (all instruction sets).
constexpr int64_t kPackBlock = 16;
// Largest batch the small-batch forward takes (rnn.cpp, small_batch_path, decides
// which batches do).
constexpr int64_t kSmallBatchMax = 32;
// Floats of W_hh [G*H, K] packed for the small-batch path: ceil(H/16) blocks,
// each [K][G][16] (unit fastest, then gate, then input column k), or with
// gate_major [G][K][16] (each gate's part of the block contiguous); units past
// H are zero. Which one a forward reads is Kernels::gate_major's choice.
int64_t packed_recurrent_size(int64_t G, int64_t H, int64_t K);
// Packs blocks [block_begin, block_end) of w_hh into packed (same layout).
void pack_recurrent(int64_t G, int64_t H, int64_t K, const float* w_hh, float* packed,
                    int64_t block_begin, int64_t block_end, bool gate_major);
// Block jb alone, into dst ([K][G][16] or [G][K][16]).
void pack_recurrent_block(int64_t G, int64_t H, int64_t K, const float* w_hh, int64_t jb, float* dst,
                          bool gate_major);
// W_hh in bfloat16 (round to nearest even), all blocks, each [K/2][G][16][2],
// or [G][K/2][16][2] with gate_major: the weights of k and k + 1 side by side
// in one 32-bit lane, so that one load and one shift or mask widen them (K odd:
// the last pair's second half is 0).
int64_t packed_recurrent_size_bf16(int64_t G, int64_t H, int64_t K);  // 16-bit values
void pack_recurrent_bf16(int64_t G, int64_t H, int64_t K, const float* w_hh, uint16_t* packed,
                         bool gate_major);
// Block jb alone, into dst ([K/2][G][16][2] or [G][K/2][16][2]).
void pack_recurrent_block_bf16(int64_t G, int64_t H, int64_t K, const float* w_hh, int64_t jb, uint16_t* dst,
                               bool gate_major);

// The lanes product, for the per-step recurrent terms of layers off the
// small-batch path (rnn.cpp, lanes_path): C[M, N] (row stride ldc) += A[M, K]
// (row stride lda) op(W), W packed in blocks of 16 output columns (each [K][16])
// that each thread streams once per call. The AVX-512 kernels take any M, in
// passes of up to 8 rows of A (a broadcast each) against 3 blocks (a vector of
// 16 weights each per k); the AVX2 ones M <= Kernels::lanes, rows in lanes: per
// k one vector of A^T against every column's broadcast weight, so that each
// weight is read once per call for all rows. Either way the step streams W_hh
// from L3 while staying compute-bound (docs/PERFORMANCE.md).
struct LanesGemm {
  int64_t M = 0, N = 0, K = 0;
  const float* a = nullptr;       // [M, lda] read
  int64_t lda = 0;                // row stride of a
  const float* packed = nullptr;  // [lanes_packed_size(N, K)] from pack_lanes
  float* c = nullptr;             // [M, ldc] read and written (+=); no alias with a
  int64_t ldc = 0;
  int num_threads = 1;            // output column blocks are split between them
};
// The calling thread's buffer of at least n floats, 64-byte aligned; it grows,
// never shrinks, and lives as long as the thread (compiled apart from the
// instruction-set files, so that no library template is instantiated under
// their target options).
float* thread_scratch(size_t n);
// Floats of W packed for lanes_gemm: ceil(N/16) blocks of 16 output columns,
// each [K][16] (column fastest; columns past N are zero).
int64_t lanes_packed_size(int64_t N, int64_t K);
// Packs W for C += A W^T (W [N, K], row stride K), or with w_is_kn for C += A W
// (W [K, N], row stride ldw), into packed [lanes_packed_size(N, K)], on up to
// num_threads threads.
void pack_lanes(int64_t N, int64_t K, const float* w, int64_t ldw, bool w_is_kn, float* packed,
                int num_threads);

// Arguments of the small-batch forward: everything of rnn_forward after the bias
// row (see rnn.cpp, forward_impl), the input projection included.
struct SmallBatchForward {
  const RnnLayerDims* dims = nullptr;  // proj_size == 0, or an LSTM with a projection (below)
  const float* x = nullptr;            // [rows, ldx]
  int64_t ldx = 0;
  const float* w_ih = nullptr;         // [G*H, I]
  const float* w_hh = nullptr;         // [G*H, H], packed by the threads when pack
  // W_ih packed as W_hh is ([I][G][16] per block, or [G][I][16] where
  // Kernels::projection_gate_major: pack_recurrent(G, H, I, w_ih, ...)) by the
  // caller, or null. Given, the input projection is the kernels'
  // own product over it instead of GEMMs over w_ih (rnn.cpp,
  // packed_projection_path, says which layers take it).
  const float* w_ih_packed = nullptr;
  // Without w_ih_packed: each thread packs its blocks of W_ih one at a time
  // into a buffer of its own (thread_scratch) and takes the same product over
  // them (rnn.cpp, self_packed_projection).
  bool pack_projection = false;
  float* packed = nullptr;             // packed W_hh: written when pack, else read
  bool gate_major = false;             // packed's layout: Kernels::gate_major
  bool pack = true;
  bool bf16 = false;                   // packed holds bfloat16 (then pack is false)
  // With bf16: the bfloat16 products (PackedPrecision::kBFloat16Products), x
  // and W_ih rounded to bfloat16 in the input projection, h in each step's
  // recurrent product; by AVX512_BF16 dot products where bf16_dot_hardware
  // (the AVX-512 kernels on a CPU that has them: bf16_dot_hardware(); the AVX2
  // kernels ignore it), else by the float and widening products on the
  // rounded values.
  bool bf16_products = false;
  bool bf16_dot_hardware = false;
  // The bfloat16 products' W_ih packed by the caller as pack_recurrent_bf16
  // packs it (k-major), or null: the threads then pack each block themselves.
  const uint16_t* w_ih_bf16 = nullptr;
  float* gates = nullptr;              // [rows, S*H] written: input projection (no biases),
                                       // then what the pointwise pass leaves
  int64_t ldg = 0;                     // row stride of gates (S*H, or ldy when gates is y)
  const float* bias = nullptr;         // [S*H] the cell's bias row
  const float* h0 = nullptr;           // [N, H] or null
  const float* c0 = nullptr;           // [N, H] or null (LSTM)
  float* y = nullptr;                  // [rows, ldy]
  int64_t ldy = 0;
  float* h_n = nullptr;                // [N, H] or null
  float* c_n = nullptr;                // [N, H] or null (LSTM)
  float* c_buf = nullptr;              // LSTM: training [rows, H], inference [N, H]
  const float* zeros = nullptr;        // [H] zeros
  bool training = false;
  int num_threads = 1;
  int64_t split_min_bytes = 0;         // a thread's slice of packed from which others may
                                       // run its last blocks (StepScheduler parts); 0: any
  int64_t prefetch_bytes = -1;         // how far ahead the product requests its weights;
                                       // 0: not at all; -1: by the slice's size
  // An LSTM with a projection (dims->proj_size = P > 0): w_hh is [4H, P] (packed
  // as above, float32 or bfloat16, with K = P), h0 and h_n are [N, P], y rows
  // are P wide. Each step is two: the gates and the pointwise pass, which writes
  // m = o * tanh(c) into m_buf, then h = m W_hr^T into y, each thread its
  // blocks of the P outputs, from W_hr packed by the caller or, with pack_hr,
  // by the threads (in the first step, with the input projection).
  const float* w_hr = nullptr;         // [P, H]
  float* packed_hr = nullptr;          // [packed_recurrent_size(1, P, H)]: written when pack_hr, else read
  bool pack_hr = true;
  float* m_buf = nullptr;              // training [rows, H], inference [N, H]
};

// Arguments of the small-batch backward: the reverse walk of rnn_backward
// (pointwise backward and dh = dgates W_hh per step), everything but the
// whole-sequence products that follow it (see rnn.cpp, backward_impl).
struct SmallBatchBackward {
  const RnnLayerDims* dims = nullptr;  // proj_size == 0
  int64_t walk_begin = 0;              // the steps [walk_begin, walk_end) of the reverse walk
  int64_t walk_end = 0;
  int64_t row0 = 0;                    // first packed row of those steps: dgates' row 0
  const float* w_hh = nullptr;         // [G*H, H]
  const float* gates = nullptr;        // [rows, S*H] post-activations of the forward
  int64_t ldg = 0;                     // row stride of gates
  const float* c_all = nullptr;        // [rows, H] LSTM
  const float* h0 = nullptr;           // [N, H] or null
  const float* c0 = nullptr;           // [N, H] or null (LSTM)
  const float* y = nullptr;            // [rows, ldy]
  int64_t ldy = 0;
  const float* dy = nullptr;           // [rows, lddy] or null
  int64_t lddy = 0;
  const float* dh_n = nullptr;         // [N, H] or null
  const float* dc_n = nullptr;         // [N, H] or null (LSTM)
  float* dgates = nullptr;             // [rows of the walked steps, S*H] written
  int64_t ldd = 0;                     // row stride of dgates (at least S*H)
  float* dh_state = nullptr;           // [N, H] scratch
  float* dc_state = nullptr;           // [N, H] scratch (LSTM)
  float* dh0 = nullptr;                // [N, H] or null
  float* dc0 = nullptr;                // [N, H] or null (LSTM)
  const float* zeros = nullptr;        // [H] zeros
  bool stream_w_hh = false;            // W_hh read in row chunks, prefetched (rnn_simd_impl.h)
  int64_t prefetch_bytes = -1;         // otherwise how far ahead its rows are requested;
                                       // 0: not at all; -1: by the slice's size
  int num_threads = 1;
};

struct Kernels {
  Isa isa;
  ArrayFn exp, sigmoid, tanh;
  RowForward forward[4];    // indexed by CellType
  RowBackward backward[4];
  // Whether the small-batch forward of a batch of `batch` rows takes weights
  // packed gate-major (pack_recurrent*): where its passes take the gates
  // a few at a time (8-lane vectors and more than one row), so that each pass
  // streams contiguous weights.
  bool (*gate_major)(int64_t G, int64_t batch);
  void (*small_batch_forward)(const SmallBatchForward& args);
  // Whether small_batch_forward takes SmallBatchForward::w_ih_packed of G gates
  // packed gate-major (pack_recurrent's gate_major): where the projection's
  // passes take the gates a few at a time.
  bool (*projection_gate_major)(int64_t G);
  void (*small_batch_backward)(const SmallBatchBackward& args);
  int lanes;  // 16: rows a rows-in-lanes call (AVX2: two 8-lane vectors) takes; AVX-512 calls take any
  void (*lanes_gemm)(const LanesGemm& args);
};

// Whether this CPU has AVX512_BF16 (the bfloat16 products' dot instructions,
// which the AVX-512 kernels take where SmallBatchForward::bf16_dot_hardware).
bool bf16_dot_hardware();

// The kernels of isa; null for kScalar and for an instruction set this CPU lacks.
const Kernels* kernels(Isa isa);
// kernels(active_isa()).
const Kernels* active_kernels();

}  // namespace rnnkit::kernels::cpu::simd
