// Time loop of one recurrent layer direction: input projection for all steps as
// one GEMM, then per step one recurrent GEMM and one fused pointwise pass; the
// backward mirrors it and finishes with whole-sequence (or whole-chunk) GEMMs for
// the weight gradients and dx. The cell math lives in rnn_pointwise.h (scalar,
// any T) and rnn_simd.h (float, vectorised, chosen at run time); small batches of
// float take the persistent small-batch paths of rnn_simd.h instead of the
// per-step GEMMs and fork/joins. docs/PERFORMANCE.md has the measurements.
#include "kernels/cpu/rnn.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#include "kernels/cpu/bfloat16.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/rnn_pointwise.h"
#include "kernels/cpu/rnn_simd.h"
#include "kernels/cpu/rnn_steps.h"
#include "kernels/cpu/rnn_tuning.h"
#include "rnnkit/error.h"
#include "rnnkit/threading.h"

namespace rnnkit::kernels::cpu {

namespace {

using detail::ElmanCell;
using detail::for_each_step;
using detail::GruCell;
using detail::LstmCell;
using detail::Step;

// Pointwise loops go parallel above this many elements per step (rows * H); below
// it the OpenMP fork costs more than the loop.
constexpr int64_t kParallelMinElements = 16384;
// The pointwise passes go parallel from this many gate values per step (rows * G
// * H): a value costs about one activation, ~0.5 ns on one core. Measured on 2
// cores: LSTM H = 256 at N = 32 (32768 values) 30 -> 22 us per forward step and
// 19 -> 12 us per backward step; Elman H = 64 at N = 32 (2048) 1.7 -> 2.2 us,
// slower.
constexpr int64_t kParallelMinGateValues = 8192;

// Buffers start on 64-byte boundaries when the workspace does.
constexpr size_t kAlignElements = 16;

size_t align_up(size_t n) { return (n + kAlignElements - 1) / kAlignElements * kAlignElements; }

// src [n_rows, width] (row stride ld) as bfloat16 bits (rounded to nearest
// even) into dst, dense; rows in parallel where there are enough values.
void to_bf16_bits(const float* src, int64_t n_rows, int64_t width, int64_t ld, std::vector<uint16_t>& dst,
                  int nthreads) {
  dst.resize(static_cast<size_t>(n_rows * width));
#pragma omp parallel for schedule(static) num_threads(nthreads) if (n_rows * width >= kParallelMinElements)
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t i = 0; i < width; ++i) dst[r * width + i] = bfloat16_bits(src[r * ld + i]);
}

// v rounded to bfloat16 (a float64 value through float32 first, as PyTorch rounds).
template <class T>
T bf16_value(T v) {
  return static_cast<T>(round_to_bfloat16(static_cast<float>(v)));
}

// The workspaces are laid out from their first 64-byte boundary (their sizes
// include kAlignElements of slack), so that every buffer in them starts on a
// cache line whatever the caller's allocator returns.
template <class T>
T* align_base(T* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<T*>((u + 63) & ~uintptr_t(63));
}

int gate_stride(CellType cell) { return cell == CellType::GRU ? GruCell::kGateStride : gate_count(cell); }

// Row stride of the gates and dgates buffers: S*H, plus one 64-byte line when
// S*H is a multiple of 256 floats (1 KiB). The weight gradients read those
// buffers transposed (dW += dgates^T x), and oneDNN 2.6's sgemm packs such an
// operand column by column: at a stride of a multiple of 1 KiB its lines fall
// into a few cache sets and evict each other. Measured on two Zen 3 cores,
// dgates^T [K = 1600 rows] x [., N], GFLOP/s at stride M -> M + 16: M = 1024
// (LSTM H = 256) N = 64-320 62-67 -> 101-124, M = 2048 N = 64-256 62-77 ->
// 124-169, M = 512 N = 64-320 88-106 -> 105-132; from N = 384 on, no change.
int64_t gates_row_stride(const RnnLayerDims& d) {
  const int64_t s = gate_stride(d.cell) * d.hidden_size;
  return s % 256 == 0 ? s + 16 : s;
}

// Forward workspace, offsets in elements of T:
//   gates [rows, S*H]  pre-activations (input projection + biases + recurrent term),
//                      row stride gates_row_stride;
//                      after a training forward the post-activations (rnn_pointwise.h).
//                      Absent for the Elman cells, whose single gate is h itself:
//                      they work in y (gates_in_output).
//   c     LSTM: training [rows, H] c_t of every packed row; inference [N, H] running c
//   m     proj_size > 0: training [rows, H] o*tanh(c) of every packed row (the input
//                      of the projection, kept for dW_hr); inference [N, H] one step's
//   bias  [S*H]        the cell's bias row (rnn_pointwise.h, fill_bias_row)
//   zeros [max(H, Hout)] a zero row standing in for a null h0/c0 row
//   stage [N, G*H]     GEMM path (step_stage_size): a step's recurrent product, made
//                      apart where oneDNN would not add it into the strided gates
//                      rows in place, and added by the pointwise pass. Forward-only:
//                      a backward that packs W_hh stages its dgates there.
//   packed             W_hh packed: for the small-batch path (rnn_pack_weights'
//                      layout) or for the generic path's per-step products
//                      (packed_gemm); unused when the caller passes packed weights
//                      that fit, absent with separate_scratch (the caller's
//                      scratch holds it). Forward-only: the backward may keep its
//                      dgates there (see backward_layout).
struct ForwardLayout {
  size_t gates = 0, c = 0, m = 0, bias = 0, zeros = 0, stage = 0, stage_end = 0, packed = 0, packed_end = 0,
         packed_hr = 0, total = 0;
};

// Batches up to 8 take the persistent small-batch forward (float, when the CPU
// has AVX2 or AVX-512), whose threads each own a slice of the hidden units for
// the whole sequence; so do, with the AVX-512 kernels, LSTM and GRU batches up
// to 32 of any size, and, on either instruction set, Elman batches up to 32
// whose per-step product is small (N * H^2 <= 2^20 multiply-adds), where the
// per-step GEMM call and two fork/joins cost more than the product.
//
// LSTM and GRU, AVX-512, two Zen 5 cores (1 MiB of L2 each), in-process A/B
// against the GEMM path (rows-in-lanes at 14-16 rows of W_hh above 1.5 MiB),
// calls in the bench's order alternating with oneDNN's primitive, medians,
// time small-batch / GEMM path at N = 12 / 16 / 24 / 32 (T = 50 for H <= 256,
// 25 for 512, 10 for 1024), forward with both weights packed beforehand:
//   LSTM 256 0.92 / 0.96 / 0.93 / 0.93, 512 0.90 / 0.89 / 0.90 / 0.96,
//        1024 0.63 / 0.65 / 0.80 / 0.83; 128 at 24 / 32 0.86 / 0.89
//   GRU  256 0.84 / 0.89 / 0.92 / 0.93, 512 0.87 / 0.86 / 0.90 / 0.90,
//        1024 0.62 / 0.68 / 0.77 / 0.82; 128 at 24 / 32 0.68 / 0.72
// packing W_hh in the call (no packed W_ih) 0.91-0.98 (H = 1024: 0.74-0.88),
// and training steps with the backward's rule below 0.84-1.00 (against both
// rules as they were, each with step_stage_size's stage). At N = 48 it was
// mixed (LSTM 512 1.01-1.03), and at N = 64 1.02-1.03 (LSTM 512, where both
// paths run at 90% of the ceiling), so 32 stays the bound. The AVX2 kernels
// (16 registers: one gate of 4 rows a pass) measured mixed on the same CPU
// (H = 512-1024 forward 0.89-1.08), and the Elman cells lose at larger sizes
// (H = 512 N = 32 1.2; Elman 1760 N = 16 on the rows-in-lanes path 0.88 of
// this path's time):
// both keep the small-product rule, measured earlier on 2 cores as forward
// time small path / GEMM path: H = 64, N = 16-32: 0.54-0.76; LSTM H = 128 at
// N = 16 0.94, GRU 0.85, Elman 0.70; Elman H = 256 at N = 16 0.88.
constexpr int64_t kSmallBatchAlways = 8;
constexpr int64_t kSmallBatchMaxStepMacs = int64_t{1} << 20;
// Whether the active kernels take the wider batches above (and below, for the
// backward): the AVX-512 ones.
bool wide_small_batches() {
  const simd::Kernels* k = simd::active_kernels();
  return k != nullptr && k->isa == simd::Isa::kAvx512;
}
bool small_batch_path(const RnnLayerDims& d) {
  if (d.proj_size != 0 || d.batch > simd::kSmallBatchMax) return false;
  if (d.batch <= kSmallBatchAlways || simd::recurrent_step_macs(d) <= kSmallBatchMaxStepMacs) return true;
  return gate_count(d.cell) >= 3 && wide_small_batches();
}

// The backward walks the small-batch path for batches up to 4; for batches of
// 5 to 8 while W_hh is below 2 MiB; and, with the AVX-512 kernels, for larger
// batches on the small-batch forward whose per-step product is at most 2^22
// multiply-adds. Training steps on two Zen 5 cores (the forward on the
// small-batch path in both), small-batch / GEMM-path backward:
//   - 9 to 32 rows: LSTM 128 N = 12 / 16 / 24 / 32 0.89 / 0.92 / 0.94 / 0.94,
//     GRU 128 N = 12 / 16 / 32 0.92 / 0.91 / 0.96, LSTM 64 N = 32 0.90, Elman
//     128 N = 32 0.94, LSTM 192 N = 20 0.91, LSTM 256 N = 12 0.98, GRU 256
//     N = 12 / 16 0.97 / 0.99; above 2^22: LSTM 256 N = 16 1.00, GRU 256 N = 24
//     1.02, LSTM 512 N = 16 1.03, GRU 512 N = 16 1.02, LSTM 1024 N = 16 1.05.
//     The AVX2 kernels on the same CPU: GRU 128 N = 16-20 1.04-1.05, the
//     others 0.98-1.00, so they stop at 8.
//   - 5 to 8 rows, W_hh from 2 MiB: LSTM 1024 N = 5 / 8 1.18 / 1.07-1.10,
//     Elman 1024 N = 8 1.06-1.10, Elman 1760 N = 8 1.08, GRU 1024 N = 8 1.07,
//     GRU 768 N = 6 1.04, LSTM 512 N = 5 / 6 / 8 1.05 / 1.03 / 1.01-1.02, GRU
//     512 N = 8 1.02, LSTM 384 N = 8 1.04, Elman 768 N = 8 1.00 (the AVX2 code:
//     LSTM 1024 N = 8 1.02, Elman 1024 1.03, LSTM 512 N = 6 1.07, GRU 1024
//     N = 8 1.03, LSTM 384 1.01); below 2 MiB mixed: Elman 512 N = 8 0.97,
//     LSTM 256 N = 8 0.99, N = 6 1.03, LSTM 320 N = 8 1.02, GRU 256 N = 8 1.04.
//   - up to 4 rows the walk stays, whatever the size: LSTM 512 N = 4 0.88,
//     GRU 1024 N = 1 / 4 0.96 / 0.95, Elman 1024 N = 4 0.96 (but LSTM 768
//     N = 2 / 4 1.06 / 1.05, whose 9 MiB W_hh streams in prefetched chunks).
// Bytes of W_hh in float32 (without a projection).
int64_t w_hh_bytes(const RnnLayerDims& d) {
  return gate_count(d.cell) * d.hidden_size * d.hidden_size * int64_t{sizeof(float)};
}
constexpr int64_t kSmallBackwardMaxStepMacs = int64_t{1} << 22;
constexpr int64_t kSmallBackwardAlways = 4;
constexpr int64_t kSmallBackwardMaxWeightBytes = int64_t{2} << 20;
bool small_batch_backward_path(const RnnLayerDims& d) {
  if (!small_batch_path(d)) return false;
  if (d.batch <= kSmallBackwardAlways) return true;
  if (d.batch <= kSmallBatchAlways)
    return w_hh_bytes(d) < kSmallBackwardMaxWeightBytes;
  return wide_small_batches() && simd::recurrent_step_macs(d) <= kSmallBackwardMaxStepMacs;
}

// Whether the small-batch backward reads W_hh in prefetched row chunks
// (rnn_simd_impl.h, recurrent_grad_rows): from 8 MiB of W_hh, where that was
// measured faster on Zen 3 (9 MiB: -10%, 64 MiB: -38% of the backward); at
// 4 MiB and below it was level or slower.
int64_t g_streamed_grad_min_bytes = -1;  // tuning::set_streamed_grad_min_bytes; -1: the default
bool stream_w_hh_in_backward(const RnnLayerDims& d) {
  const int64_t min_bytes = g_streamed_grad_min_bytes >= 0 ? g_streamed_grad_min_bytes : int64_t{8} << 20;
  return w_hh_bytes(d) >= min_bytes;
}

// A small-batch forward group whose slice of W_hh is at least this big is split
// into parts (its 16-unit blocks) that a thread done with its own group may run
// for it (rnn_simd_impl.h, small_batch_forward_cell): such a slice streams from
// L3 every step, so no core's cache is lost when another core runs some of its
// blocks, and its step is long enough that one core slowed for a while (a
// neighbour on a shared host) leaves the other waiting for microseconds.
// Measured on two Zen 3 cores, in-process A/B alternating call by call, ratios
// of medians over 40-call windows for 80-100 s (docs/PERFORMANCE.md): gru-1024-1
// 0.984 (0.966-1.005), lstm-768-2 (4.5 MiB) 0.995 (0.93-1.01), the slow windows
// being the host's slow phases; split from 2 MiB, lstm-512-1 1.006 and
// lstm-512-4 0.997, hence 4 MiB.
int64_t g_split_min_bytes = -1;  // tuning::set_split_min_bytes; -1: the default
int64_t split_min_bytes() { return g_split_min_bytes >= 0 ? g_split_min_bytes : int64_t{4} << 20; }
int64_t g_small_batch_prefetch = -1;  // tuning::set_small_batch_prefetch; -1: by the slice's size

// Layers off the small-batch path whose per-step recurrent terms take the
// lanes product (rnn_simd.h, lanes_gemm: W_hh in blocks of 16 output columns)
// instead of oneDNN's matmul on W_hh packed for it.
//
// With the AVX-512 kernels (passes of up to 8 rows against 3 blocks, any row
// count): every Elman layer, and LSTM and GRU layers with W_hh up to 1 MiB and
// batches up to 64 (larger batches of those, and the projected LSTM, keep the
// rule below). In-process A/B on two Zen 5 cores, calls alternating with
// oneDNN's primitive, medians, time lanes / GEMM path, forward and training step:
//   Elman 256 N = 24 / 64 0.91 / 0.97, 0.94 / 0.98; 512 N = 12 / 32 / 128 0.96 /
//   0.97 / 0.97, 0.98 / 0.98 / 1.00; 1024 N = 9 / 12 / 32 / 64 0.98 / 0.95 /
//   0.95 / 0.98, 0.98 / 0.97 / 0.99 / 0.99; 1760 N = 12 / 32 / 64 0.97 / 0.97 /
//   0.98, 0.99 / 0.99 / 0.99; 64 N = 64 0.73, 0.85; 2048 N = 32 0.96, 0.94.
//   LSTM 64 / 128 / 256 N = 64 0.81 / 0.94 / 0.95, 0.86 / 0.96 / 0.96; GRU 256
//   N = 64 0.96, 0.95; GRU 128 N = 40 0.88, 0.92. Not taken: LSTM 256 N = 128
//   1.01 / 0.97, LSTM 320 N = 64 1.01 / 0.97, LSTM 384 N = 64 1.05 / 1.00, GRU
//   384 N = 64 1.05 / 1.02, LSTM 512 N = 48 / 64 1.02 / 1.01 forward, GRU 1024
//   N = 64 1.02, LSTM 1024 N = 48 0.98 / 1.02 (training).
//
// Otherwise (the AVX2 kernels, whose rows-in-lanes product takes 16 rows as two
// vectors): GEMM-path batches of 14 to 16 rows (7/8 of those 16) whose W_hh
// does not fit the cores' L2, where each weight read once per step for all rows
// keeps the step compute-bound while W_hh streams from L3.
// Forward time against the matmul path at 16 rows, 2 Intel cores with 2 MiB of
// L2 each (medians of 3 runs, each against oneDNN's primitive in the same run):
// W_hh of 12-16 MB (Elman 1760 and 2048, GRU and LSTM 1024) 0.85-0.93x, 7-9 MB
// (GRU, LSTM 768) 0.95-1.02x, but 4 MB and below (Elman 1024, LSTM 512, H =
// 256) 1.05-1.15x, where oneDNN's blocking keeps the weights in L2; at 10-12
// rows against 12 MB it was 1.1-1.3x (the lanes past the batch compute nothing).
// On 2 Zen 3 cores (AVX2, 512 KiB of L2 each) against oneDNN's packed sgemm, us
// per step of the whole forward: W_hh of 12-16 MB 0.90-0.98x, LSTM 512 (4 MB)
// 0.90x, Elman 1024 (4 MB) 0.92-0.96x, GRU 512 (3 MB) 0.95-0.96x, LSTM 256 (1
// MB) 0.96-1.07x. Hence the threshold: 1.5x the L2 of the machine's cores
// (6 MiB on the first machine, 1.5 MiB on the second;
// tuning::default_lanes_min_weights). Returns the kernels to call, or null off
// this path.
constexpr int64_t kLanesGatedMaxBytes = int64_t{1} << 20;
constexpr int64_t kLanesGatedMaxBatch = 64;
int64_t g_lanes_min_weights = -1;  // tuning::set_lanes_min_weights; -1: the default rule
bool small_batch_proj_path(const RnnLayerDims& d);  // below
const simd::Kernels* lanes_path(const RnnLayerDims& d) {
  const simd::Kernels* k = simd::active_kernels();
  if (k == nullptr || small_batch_path(d) || small_batch_proj_path(d)) return nullptr;
  if (k->isa == simd::Isa::kAvx512 && d.proj_size == 0 &&
      (gate_count(d.cell) == 1 || (w_hh_bytes(d) <= kLanesGatedMaxBytes && d.batch <= kLanesGatedMaxBatch)))
    return k;
  const int64_t min_weights = g_lanes_min_weights >= 0 ? g_lanes_min_weights : tuning::default_lanes_min_weights();
  if (gate_count(d.cell) * d.hidden_size * hidden_out_size(d) < min_weights) return nullptr;
  if (d.batch > k->lanes || 8 * d.batch < 7 * k->lanes) return nullptr;
  return k;
}

// Floats of W_hh packed for the lanes forward (0 off that path).
size_t lanes_forward_size(const RnnLayerDims& d) {
  if (lanes_path(d) == nullptr) return 0;
  return static_cast<size_t>(simd::lanes_packed_size(gate_count(d.cell) * d.hidden_size, hidden_out_size(d)));
}

// The Elman cells keep their pre- and post-activations in y itself.
bool gates_in_output(const RnnLayerDims& d) { return gate_count(d.cell) == 1; }

// Whether a forward on d (an LSTM with a projection) takes the small-batch
// path with its second product per step (simd::SmallBatchForward, w_hr): up
// to 8 rows and from 2 steps, with vector kernels. It takes W_hh [4H, P], W_ih
// and W_hr [P, H] packed by the caller (rnn_pack_weights,
// rnn_pack_input_weights, rnn_pack_projection_weights; the modules keep them
// between inference calls), else packs W_hh and W_hr itself. Before, such
// layers ran the GEMM path: per step a product, a fork/join for the pointwise
// pass and a GEMM through W_hr. Two Zen 4 cores, the module's forward (eval
// mode, weights kept packed), calls alternating (medians of 38), this path /
// the GEMM path: inference H / P / N / T 512 / 256 / 1 / 25 0.41, 1024 / 256 /
// 1 / 50 0.42, 1024 / 512 / 4 / 25 0.57, 512 / 128 / 8 / 25 0.82, 256 / 128 /
// 1 / 100 0.55, 128 / 64 / 1 / 256 0.45, 512 / 256 / 1 / 4 0.72-0.76;
// forward + backward (the backward on the GEMM path either way) 512 / 256 / 1
// / 25 0.74, 1024 / 256 / 4 / 25 0.82, 256 / 128 / 8 / 50 0.97. One step
// (a decoder's call per token) was mixed, 0.74-1.21 (512 / 256 / 1 1.10-1.16,
// 1024 / 512 / 1 1.21, 768 / 256 / 1 0.74), so it keeps the GEMM path; at 16
// and 32 rows (where the AVX-512 kernels take the layer without a projection)
// level to 5% slower: 640 / 320 / 16 1.01, 512 / 256 / 32 1.05. The AVX2
// kernels on the same CPU (oneDNN's GEMMs unchanged), inference: 512 / 256 /
// 1 / 25 0.50, 1024 / 256 / 1 / 50 0.55, 1024 / 512 / 4 / 25 0.85, 512 / 128 /
// 8 / 25 0.80, 256 / 128 / 1 / 100 0.58.
bool g_bf16_dot_hardware = true;  // tuning::set_bf16_dot_hardware
bool g_small_batch_proj = true;  // tuning::set_small_batch_proj
bool small_batch_proj_path(const RnnLayerDims& d) {
  return g_small_batch_proj && d.proj_size > 0 && d.batch <= kSmallBatchAlways && d.steps >= 2 &&
         simd::active_kernels() != nullptr;
}

// Floats of W_hh [G*H, H_out] packed for the small-batch path, with or without
// a projection (0 off it). With one, W_hr's packing has an area of its own in
// the forward workspace (ForwardLayout::packed_hr).
size_t small_packed_size(const RnnLayerDims& d) {
  if (!small_batch_path(d) && !small_batch_proj_path(d)) return 0;
  return static_cast<size_t>(simd::packed_recurrent_size(gate_count(d.cell), d.hidden_size, hidden_out_size(d)));
}

// The forward-only area of the workspace: W_hh packed for the small-batch path,
// or for the generic path's per-step products (packed_gemm, float, sized by
// oneDNN; or lanes_gemm). The backward keeps dgates there.
size_t recurrent_scratch_size(const RnnLayerDims& d) {
  if (small_batch_path(d) || small_batch_proj_path(d)) return small_packed_size(d);
  return std::max(lanes_forward_size(d),
                  static_cast<size_t>(packed_gemm_size(d.batch, gate_count(d.cell) * d.hidden_size,
                                                       hidden_out_size(d))));
}

// Floats of the dense [N, G*H] stage of the per-step products on the GEMM path
// (0 off it): where oneDNN's accumulating product would not take the operand
// in place, strided gates rows (LSTMs whose rows are padded, gates_row_stride;
// every GRU, whose product fills three of its four column blocks; an Elman
// layer writing into a wider y), the forward makes the product into the stage
// and the step's pointwise pass adds it to the gates as it reads them; the
// backward's pointwise pass copies the step's dgates there for its dh product.
// Both were passes of their own inside packed_gemm (one thread below 64K
// values, else one more fork/join per step): 4-6% of an LSTM forward at
// H = 256, N = 32 on 2 Xeon cores (docs/PERFORMANCE.md). A training forward
// on the small-batch path keeps it for the backward where that walks the GEMM
// path (small_batch_backward_path).
bool g_stage_step_products = true;  // tuning::set_stage_step_products
size_t step_stage_size(const RnnLayerDims& d, bool training) {
  if (lanes_path(d) != nullptr) return 0;
  if (training ? small_batch_backward_path(d) : small_batch_path(d) || small_batch_proj_path(d)) return 0;
  return static_cast<size_t>(d.batch * gate_count(d.cell) * d.hidden_size);
}

// Caller-packed weights (rnn_pack_weights) start with a header of
// kPackedHeader floats naming what they hold, checked by rnn_forward.
constexpr size_t kPackedHeader = 16;
constexpr uint32_t kPackedMagic = 0x4b4e4e52;  // "RNNK"
// kInput: W_ih (rnn_pack_input_weights); kProjection: W_hr (rnn_pack_projection_weights); the
// others W_hh.
enum class PackedKind : uint32_t { kSmallBatch = 1, kGemm = 2, kLanes = 3, kInput = 4, kProjection = 5 };
struct PackedHeader {
  uint32_t magic, cell, hidden_size, proj_size, precision, kind;
  // kGemm only: oneDNN's layout depends on these too.
  uint32_t batch, threads, floats;
  // kSmallBatch and kInput: packed gate-major (simd::Kernels::gate_major,
  // projection_gate_major).
  uint32_t gate_major;
  // kInput only.
  uint32_t input_size;
};
static_assert(sizeof(PackedHeader) <= kPackedHeader * sizeof(float), "the header fits its floats");

// Whether the small-batch forward on d takes weights packed gate-major.
bool small_batch_gate_major(const RnnLayerDims& d) {
  const simd::Kernels* k = simd::active_kernels();
  return k != nullptr && k->gate_major(gate_count(d.cell), d.batch);
}

// A header for packed weights of d's cell and sizes: the fields every kind has.
PackedHeader packed_header(const RnnLayerDims& d, PackedKind kind, PackedPrecision precision) {
  PackedHeader h{};
  h.magic = kPackedMagic;
  h.cell = static_cast<uint32_t>(d.cell);
  h.hidden_size = static_cast<uint32_t>(d.hidden_size);
  h.proj_size = static_cast<uint32_t>(d.proj_size);
  h.precision = static_cast<uint32_t>(precision);
  h.kind = static_cast<uint32_t>(kind);
  return h;
}

// The header at the start of caller-packed weights.
PackedHeader read_packed_header(const float* packed) {
  PackedHeader h;
  std::memcpy(&h, packed, sizeof h);
  return h;
}

// Writes h into the kPackedHeader floats at packed (the rest zero).
void write_packed_header(const PackedHeader& h, float* packed) {
  std::memset(packed, 0, kPackedHeader * sizeof(float));
  std::memcpy(packed, &h, sizeof h);
}

// Whether the header says rnn_pack_weights wrote it for d's cell and sizes.
bool packed_for(const PackedHeader& h, const RnnLayerDims& d) {
  return h.magic == kPackedMagic && h.cell == static_cast<uint32_t>(d.cell) &&
         h.hidden_size == static_cast<uint32_t>(d.hidden_size) &&
         h.proj_size == static_cast<uint32_t>(d.proj_size) &&
         h.precision <= static_cast<uint32_t>(PackedPrecision::kBFloat16Products);
}

// Whether the small-batch forward on d takes W_ih packed beforehand
// (rnn_pack_input_weights) for its input projection, which it then makes by
// its own product (rnn_simd_impl.h, project_block) instead of GEMMs: the cells
// with several gates, with vector kernels. Forward with W_hh packed beforehand on two
// Zen 5 cores (in-process A/B, calls in the bench's order, medians), time with
// / without: LSTM H = I = 512 N = 1 T = 25 0.89, N = 2 T = 16 0.86-0.88, N = 1
// T = 32 0.92-0.94, N = 4 T = 25 0.90, N = 8 T = 16 0.92; LSTM 640 0.90, LSTM
// 1024 N = 1 0.88-0.90, N = 4 0.85; GRU 512 N = 1 0.91-0.92, N = 4 0.91; GRU
// 1024 N = 1 T = 25 0.92-0.93, T = 200 0.97, T = 1500 0.87; one step: LSTM 512
// N = 1 0.89, N = 4 0.74, N = 8 T = 2 0.77, LSTM 1024 0.83, GRU 512 0.94;
// smaller layers: LSTM 128 N = 1 T = 256 0.95, GRU 128 0.96, LSTM 256 0.95,
// GRU 256 N = 2 0.97, LSTM 64 0.95. The AVX2 code on the same CPU (oneDNN held
// to AVX2 too; not measured on an AVX2-only CPU): LSTM 512 N = 1 T = 25 0.94-0.96,
// N = 4 0.98, one step 0.88-0.91, GRU 512 0.95, GRU 1024 T = 100 0.98-0.99,
// LSTM 128 T = 256 0.98, GRU 128 0.98-0.99. Not the Elman cells (one gate: a
// weight vector per 8 broadcasts): 0.96-1.04. The product's summation order differs
// from the GEMMs', so a forward given packed W_ih differs from one without in
// the last bits (unless it packs W_ih itself: self_packed_projection); it does
// not depend on the thread count.
bool g_packed_projection = true;  // tuning::set_packed_projection
bool packed_projection_path(const RnnLayerDims& d) {
  const simd::Kernels* k = simd::active_kernels();
  return g_packed_projection && k != nullptr && (small_batch_path(d) || small_batch_proj_path(d)) &&
         gate_count(d.cell) >= 3;
}

// Whether a small-batch forward on d given no packed W_ih (every training
// forward: the weights change between calls) packs W_ih itself, a 16-unit block
// at a time on the thread that owns it into a buffer of its own, and takes the
// product above over it instead of a GEMM per gate: with AVX-512 (all gates a
// pass) from 128 rows in the sequence. Its sums then run as with W_ih packed
// by the caller (the same bits). Two Zen 5 cores, in-process A/B, training forward
// / inference forward with W_ih not packed, new / old time (medians of 15-21):
// LSTM H = I = 650 N = 20 T = 35 0.86-0.89 / 0.86; LSTM 1500 N = 20 T = 35
// 0.88 / 0.88; GRU 650 N = 20 T = 35 0.89 / 0.91; LSTM 1000 N = 16 T = 25 0.95;
// LSTM 1008 / 640 / 656 / 1040 0.95-0.99; LSTM 512 N = 8 T = 50 0.96 / 1.00,
// GRU 512 N = 16 T = 25 0.96 / 1.01; LSTM 128 and GRU 128 N = 1 T = 256 0.96-0.98;
// LSTM 512 N = 4 T = 25 0.98; level (0.98-1.02) at LSTM 512, 768 and 1024 with
// N = 8-32 and at GRU 1024 N = 1 T = 1500; training forward, LSTM and GRU
// H = I = 100 / 200 / 400 / 800 at N = 1 / 4 / 16 / 32 over 256 rows: 0.94-0.97 /
// 0.97-1.01 / 0.94-0.99 / 0.91-0.96 (calls alternating, medians of 21). Below 128 rows it was level to 6%
// slower in inference (LSTM 512 N = 2 T = 32 1.06, LSTM 1024 N = 4 T = 16 1.04;
// the packing is paid for fewer rows), and 25 rows 3% slower in training. The
// AVX2 kernels (two gates a pass) on the same CPU: level to 3% slower (LSTM 650
// N = 20 1.01, GRU 512 N = 16 1.02-1.03), so they keep the GEMMs.
bool self_packed_projection(const RnnLayerDims& d) {
  constexpr int64_t kMinRows = 128;
  return packed_projection_path(d) && simd::active_isa() == simd::Isa::kAvx512 && packed_rows(d) >= kMinRows;
}

// The packed weights an inference forward on d takes: the small-batch path
// only with vector kernels (forward_impl), else the lanes or GEMM path.
PackedKind forward_packed_kind(const RnnLayerDims& d) {
  if (simd::active_kernels() != nullptr && (small_batch_path(d) || small_batch_proj_path(d)))
    return PackedKind::kSmallBatch;
  return lanes_path(d) != nullptr ? PackedKind::kLanes : PackedKind::kGemm;
}

// The caller-packed weights' body for a forward on d by the given path, or null
// when they were packed for the other path, another batch (kGemm) or another
// thread count (kGemm), or in the other layout (kSmallBatch: the batch and the
// instruction set decide it): the forward then packs for itself (in float).
// Weights packed for another cell or size are a caller error and throw, as do
// bfloat16 ones in training.
const float* packed_body(const RnnLayerDims& d, const float* packed, PackedKind kind,
                         bool training, PackedPrecision* precision) {
  const PackedHeader h = read_packed_header(packed);
  RNNKIT_CHECK(packed_for(h, d) && h.kind != static_cast<uint32_t>(PackedKind::kInput) &&
                   h.kind != static_cast<uint32_t>(PackedKind::kProjection),
               "rnn_forward: w_hh_packed was not written by rnn_pack_weights for this cell, "
               "hidden_size (", d.hidden_size, ") and proj_size (", d.proj_size, ")");
  *precision = static_cast<PackedPrecision>(h.precision);
  RNNKIT_CHECK(!(*precision != PackedPrecision::kFloat32 && training),
               "rnn_forward: bfloat16 packed weights are for inference only (training = true)");
  if (h.kind != static_cast<uint32_t>(kind)) return nullptr;
  if (kind == PackedKind::kSmallBatch && (h.gate_major != 0) != small_batch_gate_major(d))
    return nullptr;
  if (kind == PackedKind::kGemm) {
    const int64_t G = gate_count(d.cell);
    if (h.batch != static_cast<uint32_t>(d.batch) ||
        h.threads != static_cast<uint32_t>(rnnkit::get_num_threads()) ||
        static_cast<int64_t>(h.floats) != packed_gemm_size(d.batch, G * d.hidden_size, hidden_out_size(d)))
      return nullptr;
  }
  return packed + kPackedHeader;
}

// Whether the header says rnn_pack_input_weights wrote it for d's cell and sizes.
bool input_packed_for(const PackedHeader& h, const RnnLayerDims& d) {
  return packed_for(h, d) && h.kind == static_cast<uint32_t>(PackedKind::kInput) &&
         h.input_size == static_cast<uint32_t>(d.input_size);
}

// Whether the active kernels take W_ih of d's cell packed gate-major.
bool input_gate_major(const RnnLayerDims& d) {
  const simd::Kernels* k = simd::active_kernels();
  return k != nullptr && k->projection_gate_major(gate_count(d.cell));
}

// Whether a forward on d takes the packed W_ih whose header is h (written for
// d's cell and sizes): on its path, in the active kernels' layout.
bool input_packed_taken(const PackedHeader& h, const RnnLayerDims& d) {
  return packed_projection_path(d) && (h.gate_major != 0) == input_gate_major(d);
}

// The caller-packed W_ih's body for a forward on d, or null when that forward
// does not take a packed projection (packed_projection_path) or takes it in
// the other layout (packed by other kernels). W_ih packed for another cell or
// size is a caller error and throws.
const float* packed_input_body(const RnnLayerDims& d, const float* packed,
                               PackedPrecision w_hh_precision = PackedPrecision::kFloat32) {
  const PackedHeader h = read_packed_header(packed);
  RNNKIT_CHECK(input_packed_for(h, d),
               "rnn_forward: w_ih_packed was not written by rnn_pack_input_weights for this cell, "
               "hidden_size (", d.hidden_size, ") and input_size (", d.input_size, ")");
  // The bfloat16 products take both weights in that precision, the others
  // W_ih in float32.
  const auto want = w_hh_precision == PackedPrecision::kBFloat16Products ? PackedPrecision::kBFloat16Products
                                                                          : PackedPrecision::kFloat32;
  RNNKIT_CHECK(h.precision == static_cast<uint32_t>(want), "rnn_forward: w_ih_packed holds ",
               packed_precision_name(static_cast<PackedPrecision>(h.precision)), " weights, w_hh_packed ",
               packed_precision_name(w_hh_precision), " ones: expected w_ih_packed in ", packed_precision_name(want));
  if (want == PackedPrecision::kBFloat16Products) return packed + kPackedHeader;
  return input_packed_taken(h, d) ? packed + kPackedHeader : nullptr;
}

// Whether the header says rnn_pack_projection_weights wrote it for d's cell
// and sizes.
bool projection_packed_for(const PackedHeader& h, const RnnLayerDims& d) {
  return packed_for(h, d) && h.kind == static_cast<uint32_t>(PackedKind::kProjection);
}

// The caller-packed W_hr's body for a forward on d, or null where that
// forward takes none (not small_batch_proj_path). W_hr packed for another
// cell or size is a caller error and throws.
const float* packed_projection_body(const RnnLayerDims& d, const float* packed) {
  const PackedHeader h = read_packed_header(packed);
  RNNKIT_CHECK(projection_packed_for(h, d),
               "rnn_forward: w_hr_packed was not written by rnn_pack_projection_weights for this cell, "
               "hidden_size (", d.hidden_size, ") and proj_size (", d.proj_size, ")");
  return small_batch_proj_path(d) ? packed + kPackedHeader : nullptr;
}

ForwardLayout forward_layout(const RnnLayerDims& d, bool training) {
  const size_t rows = static_cast<size_t>(packed_rows(d));
  const size_t H = static_cast<size_t>(d.hidden_size);
  const size_t N = static_cast<size_t>(d.batch);
  const size_t state_rows = training ? rows : N;
  ForwardLayout L;
  size_t at = 0;
  L.gates = at;
  if (!gates_in_output(d)) at = align_up(at + rows * static_cast<size_t>(gates_row_stride(d)));
  L.c = at;
  if (d.cell == CellType::LSTM) at = align_up(at + state_rows * H);
  L.m = at;
  if (d.proj_size > 0) at = align_up(at + state_rows * H);
  L.bias = at;
  at = align_up(at + static_cast<size_t>(gate_stride(d.cell)) * H);
  L.zeros = at;
  at = align_up(at + std::max(H, static_cast<size_t>(hidden_out_size(d))));
  L.stage = at;
  at = align_up(at + step_stage_size(d, training));
  L.stage_end = at;
  L.packed = at;
  if (!d.separate_scratch) at = align_up(at + recurrent_scratch_size(d));
  L.packed_end = at;
  L.packed_hr = at;  // W_hr packed by the small-batch forward of an LSTM with a projection
  if (small_batch_proj_path(d))
    at = align_up(at + static_cast<size_t>(simd::packed_recurrent_size(1, d.proj_size, d.hidden_size)));
  L.total = at + kAlignElements;
  return L;
}

// Calls fn(b, j0, j1) for every row b < n and a split of its units [0, H) into
// column slices, in parallel when the step (n rows of G gates of H units) is
// large enough: over rows when there are enough of them, else over slices of
// 16-unit multiples too.
template <class Fn>
void parallel_rows(int64_t n, int64_t G, int64_t H, int nthreads, Fn&& fn) {
  if (nthreads <= 1 || n * G * H < kParallelMinGateValues) {
    for (int64_t b = 0; b < n; ++b) fn(b, int64_t(0), H);
    return;
  }
  int64_t slices = 1;
  while (n * slices < 4 * nthreads && H / (2 * slices) >= 64) slices *= 2;
  const int64_t width = ((H + slices - 1) / slices + 15) / 16 * 16;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t task = 0; task < n * slices; ++task) {
    const int64_t b = task / slices, j0 = (task % slices) * width;
    if (j0 < H) fn(b, j0, std::min(H, j0 + width));
  }
}

// The pointwise passes of Cell for T: the vectorised ones for float when the CPU
// has them, else the scalar templates.
template <class T, class Cell>
struct Pointwise {
  const simd::Kernels* k = nullptr;
  CellType cell;
  explicit Pointwise(CellType c) : cell(c) {
    if constexpr (std::is_same_v<T, float>) k = simd::active_kernels();
  }
  template <bool Training>
  void forward(int64_t n, int64_t H, T* gates, const T* bias, const T* h_prev, const T* c_prev,
               T* c, T* h) const {
    if constexpr (std::is_same_v<T, float>) {
      if (k != nullptr) {
        k->forward[static_cast<int>(cell)](n, H, gates, bias, h_prev, c_prev, c, h, Training);
        return;
      }
    }
    Cell::template forward_row<Training>(n, H, gates, bias, h_prev, c_prev, c, h);
  }
  void backward(int64_t n, int64_t H, const T* gates, const T* h_prev, const T* c_prev, const T* c,
                const T* dh_a, const T* dh_b, T* dh_direct, T* dc, T* dgates) const {
    if constexpr (std::is_same_v<T, float>) {
      if (k != nullptr) {
        k->backward[static_cast<int>(cell)](n, H, gates, h_prev, c_prev, c, dh_a, dh_b, dh_direct,
                                            dc, dgates);
        return;
      }
    }
    Cell::backward_row(n, H, gates, h_prev, c_prev, c, dh_a, dh_b, dh_direct, dc, dgates);
  }
};

// The backward walks the steps in chunks and keeps the gradient w.r.t. the
// pre-activations (dgates) of one chunk at a time: after each chunk, its rows go
// through the whole-chunk products (dW_ih, dx, dW_hh, biases). A chunk is at
// least kMinChunkRows rows deep (so that those products stay efficient and the
// extra passes over dW stay a few percent) and its dgates take about
// kChunkElements; when the forward workspace's packed-weights area (which the
// backward does not otherwise need) holds a step, the chunk fills that instead.
constexpr int64_t kMinChunkRows = 512;
constexpr int64_t kChunkElements = 1 << 20;  // 4 MB of float

int64_t g_chunk_rows_cap = 0;  // tuning::set_backward_chunk_rows

// Whether the forward's packed-weights area holds the dgates of a whole step.
bool dgates_in_forward_workspace(const RnnLayerDims& d) {
  return !d.separate_scratch && static_cast<int64_t>(recurrent_scratch_size(d)) >=
         d.batch * gates_row_stride(d);
}

// Whether the backward writes dgates over the forward's saved gates (the Elman
// cells keep theirs in y, which the caller owns).
bool dgates_over_gates(const RnnLayerDims& d) {
  return d.overwrite_forward_workspace && !gates_in_output(d);
}

// Rows of dgates held at once.
int64_t chunk_rows(const RnnLayerDims& d) {
  const int64_t rows = packed_rows(d);
  if (dgates_over_gates(d)) return rows;
  const int64_t row_elems = gates_row_stride(d);
  int64_t budget;
  if (dgates_in_forward_workspace(d))
    budget = static_cast<int64_t>(recurrent_scratch_size(d)) / row_elems;
  else
    budget = std::max(kMinChunkRows, kChunkElements / row_elems);
  if (g_chunk_rows_cap > 0) budget = std::min(budget, g_chunk_rows_cap);
  return std::min(rows, std::max(budget, d.batch));
}

// The generic path's per-step dh = dgates W_hh with W_hh packed once for the
// whole backward (packed_gemm, or lanes_gemm on its path): when the backward
// keeps dgates over the saved gates (so it has no dgates buffer of its own) and
// the copy costs at most half of what the forward keeps per row anyway
// (hidden_size <= rows / 2).
size_t backward_packed_size(const RnnLayerDims& d) {
  if (!dgates_over_gates(d) || small_batch_backward_path(d) || 2 * d.hidden_size > packed_rows(d)) return 0;
  if (lanes_path(d) != nullptr)
    return static_cast<size_t>(simd::lanes_packed_size(hidden_out_size(d), gate_count(d.cell) * d.hidden_size));
  return static_cast<size_t>(
      packed_gemm_size(d.batch, hidden_out_size(d), gate_count(d.cell) * d.hidden_size));
}

// Backward workspace, offsets in elements of T (C = chunk_rows):
//   dgates   [C, S*H]     gradient w.r.t. the pre-activations of the chunk's rows, row
//                         stride gates_row_stride;
//                         in the forward workspace instead when it has room (over
//                         the saved gates with overwrite_forward_workspace, or in
//                         the packed-weights area)
//   dh_state [N, Hout]    gradient w.r.t. the h entering the step being processed
//   dc_state [N, H]       LSTM: likewise for c
//   dh_proj  [C, P]       proj_size > 0: gradient w.r.t. each row's projected h
//   dm       [N, H]       proj_size > 0: one step's gradient w.r.t. o*tanh(c)
//   ones     [C]          ones, for the bias column sums as a GEMM
//   zeros    [max(H, Hout)]
//   packed_dh W_hh packed for the per-step dh products (backward_packed_size)
// The h that entered each step is not copied: dW_hh pairs runs of dgates rows
// with the rows of y (or h0) they came from.
struct BackwardLayout {
  size_t dgates = 0, dh_state = 0, dc_state = 0, dh_proj = 0, dm = 0, ones = 0, zeros = 0,
         packed_dh = 0, packed_dh_end = 0, total = 0;
  int64_t chunk = 0;
  bool dgates_in_forward_workspace = false;
};

BackwardLayout backward_layout(const RnnLayerDims& d) {
  const size_t H = static_cast<size_t>(d.hidden_size);
  const size_t Hout = static_cast<size_t>(hidden_out_size(d));
  const size_t N = static_cast<size_t>(d.batch);
  const size_t P = static_cast<size_t>(d.proj_size);
  BackwardLayout L;
  L.chunk = chunk_rows(d);
  L.dgates_in_forward_workspace = dgates_over_gates(d) || dgates_in_forward_workspace(d);
  const size_t C = static_cast<size_t>(L.chunk);
  size_t at = 0;
  L.dgates = at;
  if (!L.dgates_in_forward_workspace) at = align_up(at + C * static_cast<size_t>(gates_row_stride(d)));
  L.dh_state = at;
  at = align_up(at + N * Hout);
  L.dc_state = at;
  if (d.cell == CellType::LSTM) at = align_up(at + N * H);
  L.dh_proj = at;
  if (P > 0) at = align_up(at + C * P);
  L.dm = at;
  if (P > 0) at = align_up(at + N * H);
  L.ones = at;
  at = align_up(at + C);
  L.zeros = at;
  at = align_up(at + std::max(H, Hout));
  L.packed_dh = at;
  at = align_up(at + backward_packed_size(d));
  L.packed_dh_end = at;
  L.total = at + kAlignElements;
  return L;
}

// dst[j] += src[j] for j < n: the rounding of add_rows in packed_gemm.
template <class T>
void add_to_row(int64_t n, const T* src, T* dst) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
}

template <class T>
void copy_row(int64_t n, const T* src, T* dst) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
}

template <class T>
void set_row(int64_t n, T value, T* dst) {
  std::fill(dst, dst + n, value);
}

template <class T>
void check_common(const RnnLayerDims& d, const RnnWeights<T>& w, int64_t ldx, int64_t ldy,
                  const void* workspace, const char* fn) {
  check_rnn_dims(d);
  RNNKIT_CHECK(w.w_ih != nullptr && w.w_hh != nullptr, fn, ": weight_ih and weight_hh are required");
  RNNKIT_CHECK(!d.has_bias || (w.b_ih != nullptr && w.b_hh != nullptr), fn,
               ": has_bias is set but bias_ih or bias_hh is null");
  RNNKIT_CHECK(d.proj_size == 0 || w.w_hr != nullptr, fn, ": proj_size is ", d.proj_size,
               " but weight_hr is null");
  RNNKIT_CHECK(ldx >= d.input_size, fn, ": ldx must be at least input_size (", d.input_size,
               "), got ", ldx);
  RNNKIT_CHECK(ldy >= hidden_out_size(d), fn, ": ldy must be at least the output width (",
               hidden_out_size(d), "), got ", ldy);
  RNNKIT_CHECK(workspace != nullptr, fn, ": workspace is null");
}

template <class T, class Cell, bool Training>
void forward_impl(const RnnLayerDims& d, const RnnWeights<T>& w, const T* x, int64_t ldx,
                  const T* h0, const T* c0, T* y, int64_t ldy, T* h_n, T* c_n, T* workspace,
                  T* scratch) {
  const int64_t I = d.input_size, H = d.hidden_size, P = d.proj_size;
  const int64_t Hout = hidden_out_size(d);
  const int64_t GH = Cell::kGates * H;      // width of the GEMM outputs
  const int64_t rows = packed_rows(d);
  const ForwardLayout L = forward_layout(d, Training);
  workspace = align_base(workspace);
  // The packed copy of W_hh: in the workspace, or the separate scratch (none
  // when the caller's packed weights fit, rnn_forward checked).
  T* packed = !d.separate_scratch ? workspace + L.packed : scratch != nullptr ? align_base(scratch) : nullptr;
  const int64_t packed_capacity = !d.separate_scratch ? static_cast<int64_t>(L.packed_end - L.packed)
                                  : scratch != nullptr ? static_cast<int64_t>(recurrent_scratch_size(d))
                                                       : 0;
  // Gates [rows, S*H] with row stride ldg: the workspace's, or y for the Elman cells.
  const bool in_y = gates_in_output(d);
  T* gates = in_y ? y : workspace + L.gates;
  const int64_t ldg = in_y ? ldy : gates_row_stride(d);
  T* c_buf = workspace + L.c;      // [rows, H] training, [N, H] inference
  T* m_buf = workspace + L.m;      // [rows, H] training, [N, H] inference
  T* zeros = workspace + L.zeros;  // [max(H, Hout)]
  set_row(std::max(H, Hout), T(0), zeros);

  const int nthreads = rnnkit::get_num_threads();
  T* bias = workspace + L.bias;  // [S*H], added by the pointwise passes
  Cell::fill_bias_row(H, bias, d.has_bias ? w.b_ih : nullptr, d.has_bias ? w.b_hh : nullptr);

  if constexpr (std::is_same_v<T, float>) {
    const simd::Kernels* k = simd::active_kernels();
    const bool small = k != nullptr && small_batch_path(d);
    const bool proj_path = k != nullptr && small_batch_proj_path(d);
    PackedPrecision precision = PackedPrecision::kFloat32;
    const float* given = (small || proj_path) && w.w_hh_packed != nullptr
                             ? packed_body(d, w.w_hh_packed, PackedKind::kSmallBatch, Training, &precision)
                             : nullptr;
    // The bfloat16 products, asked for by the flag or by W_hh packed so (the
    // header says it even where the packing's layout does not fit this call):
    // W_hh packed here unless given in bfloat16 in this call's layout (a
    // kBFloat16 packing holds the same values in the same layout).
    std::vector<float> products_packed;
    if ((small || proj_path) && (w.bf16_products || precision == PackedPrecision::kBFloat16Products)) {
      if (given == nullptr || precision == PackedPrecision::kFloat32) {
        products_packed.resize(rnn_packed_weights_size(d, PackedPrecision::kBFloat16Products));
        rnn_pack_weights(d, w.w_hh, products_packed.data(), PackedPrecision::kBFloat16Products);
        given = products_packed.data() + kPackedHeader;
      }
      precision = PackedPrecision::kBFloat16Products;
    }
    const float* given_hr =
        proj_path && w.w_hr_packed != nullptr ? packed_projection_body(d, w.w_hr_packed) : nullptr;
    if (small || proj_path) {
      simd::SmallBatchForward a;
      a.dims = &d;
      a.x = x;
      a.ldx = ldx;
      a.w_ih = w.w_ih;
      a.w_hh = w.w_hh;
      if (w.w_ih_packed != nullptr) {
        const PackedPrecision taken = given != nullptr ? precision : PackedPrecision::kFloat32;
        const float* body = packed_input_body(d, w.w_ih_packed, taken);
        if (taken == PackedPrecision::kBFloat16Products)
          a.w_ih_bf16 = reinterpret_cast<const uint16_t*>(body);
        else
          a.w_ih_packed = body;
      }
      a.pack_projection = a.w_ih_packed == nullptr && self_packed_projection(d);
      a.pack = given == nullptr;
      a.bf16 = !a.pack && precision != PackedPrecision::kFloat32;
      a.bf16_products = !a.pack && precision == PackedPrecision::kBFloat16Products;
      a.bf16_dot_hardware = a.bf16_products && g_bf16_dot_hardware && k->isa == simd::Isa::kAvx512 &&
                            simd::bf16_dot_hardware();
      a.gate_major = small_batch_gate_major(d);
      a.packed = a.pack ? packed : const_cast<float*>(given);
      a.gates = gates;
      a.ldg = ldg;
      a.bias = bias;
      a.h0 = h0;
      a.c0 = c0;
      a.y = y;
      a.ldy = ldy;
      a.h_n = h_n;
      a.c_n = c_n;
      a.c_buf = c_buf;
      a.zeros = zeros;
      a.training = Training;
      a.num_threads = nthreads;
      a.split_min_bytes = split_min_bytes();
      a.prefetch_bytes = g_small_batch_prefetch;
      if (proj_path) {
        a.w_hr = w.w_hr;
        a.pack_hr = given_hr == nullptr;
        a.packed_hr = a.pack_hr ? workspace + L.packed_hr : const_cast<float*>(given_hr);
        a.m_buf = m_buf;
      }
      k->small_batch_forward(a);
      return;
    }
  }

  // The bfloat16 products on oneDNN's bfloat16 matmul where this CPU runs it
  // (AVX512_BF16): x, W_ih and W_hh as bfloat16 bits (their rounded values,
  // exactly), each product into a dense float buffer (prod) added to the gates
  // rows. Both products then take half the time of the float GEMMs on the
  // rounded values (oneDNN's bfloat16 matmul at 380-460 GFLOP/s against 230
  // for float32 on two Zen 4 cores), to the rounding of the sums the same.
  bool bf16_matmul = false;
  std::vector<uint16_t> w_ih16, w_hh16, act16;
  std::vector<float> prod;
  if constexpr (std::is_same_v<T, float>) {
    bf16_matmul = w.bf16_products && g_bf16_dot_hardware && bf16_gemm_available();
    if (bf16_matmul) {
      to_bf16_bits(w.w_ih, GH, I, I, w_ih16, nthreads);
      to_bf16_bits(w.w_hh, GH, Hout, Hout, w_hh16, nthreads);
      to_bf16_bits(x, rows, I, ldx, act16, nthreads);
      prod.resize(static_cast<size_t>(rows * GH));
      bf16_matmul = bf16_gemm(rows, GH, I, act16.data(), I, w_ih16.data(), I, prod.data(), GH);
    }
    if (bf16_matmul) {
      // prod's gate blocks to their gates columns (the GRU's n-part to [3H, 4H),
      // [2H, 3H) zero for the recurrent term).
#pragma omp parallel for schedule(static) num_threads(nthreads) if (rows * GH >= kParallelMinElements)
      for (int64_t r = 0; r < rows; ++r) {
        float* g = gates + r * ldg;
        const float* p = prod.data() + r * GH;
        if constexpr (Cell::kGateStride == Cell::kGates) {
          std::memcpy(g, p, static_cast<size_t>(GH) * sizeof(float));
        } else {
          std::memcpy(g, p, static_cast<size_t>(2 * H) * sizeof(float));
          std::memcpy(g + 3 * H, p + 2 * H, static_cast<size_t>(H) * sizeof(float));
          set_row(H, 0.0f, g + 2 * H);
        }
      }
    }
  }

  // Otherwise the bfloat16 products off the small-batch path go through the
  // float GEMMs: x rounded into a copy for the input projection, each step's h
  // rows (h_rounded) for its product.
  std::vector<T> x_rounded, h_rounded;
  if (w.bf16_products) {
    if (!bf16_matmul) {
      x_rounded.resize(static_cast<size_t>(rows * I));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < I; ++i) x_rounded[r * I + i] = bf16_value(x[r * ldx + i]);
      x = x_rounded.data();
      ldx = I;
    }
    h_rounded.resize(static_cast<size_t>(d.batch * Hout));
  }
  // h_rows [m, Hout] (row stride ld_h) as the recurrent product takes them:
  // rounded into h_rounded (row stride Hout) for the bfloat16 products.
  const auto product_rows = [&](int64_t m, const T* h_rows, int64_t& ld_h) {
    if (!w.bf16_products) return h_rows;
    for (int64_t b = 0; b < m; ++b)
      for (int64_t j = 0; j < Hout; ++j) h_rounded[b * Hout + j] = bf16_value(h_rows[b * ld_h + j]);
    ld_h = Hout;
    return static_cast<const T*>(h_rounded.data());
  };

  // Input projection of every step: gates = x W_ih^T. The GRU's n-part goes to
  // columns [3H, 4H) so that the recurrent GEMM's n-part (which starts at 0)
  // lands apart in [2H, 3H).
  if (bf16_matmul) {
    // made above
  } else if constexpr (Cell::kGateStride == Cell::kGates) {
    gemm(false, true, rows, GH, I, T(1), x, ldx, w.w_ih, I, T(0), gates, ldg);
  } else {
    gemm(false, true, rows, 2 * H, I, T(1), x, ldx, w.w_ih, I, T(0), gates, ldg);
    gemm(false, true, rows, H, I, T(1), x, ldx, w.w_ih + 2 * H * I, I, T(0), gates + 3 * H, ldg);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (rows * H >= kParallelMinElements)
    for (int64_t r = 0; r < rows; ++r) set_row(H, T(0), gates + r * ldg + 2 * H);
  }

  // Steps with the whole batch continuing take W_hh packed once for all of them
  // (by the caller when it passes packed weights that fit); on the lanes
  // path every step does.
  bool packed_steps = false;
  const simd::Kernels* lanes = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    if (!bf16_matmul) lanes = lanes_path(d);
    const PackedKind kind = lanes != nullptr ? PackedKind::kLanes : PackedKind::kGemm;
    PackedPrecision precision = PackedPrecision::kFloat32;
    const float* given = w.w_hh_packed == nullptr ? nullptr
                                                  : packed_body(d, w.w_hh_packed, kind, Training, &precision);
    if (bf16_matmul) {
      // its own product
    } else if (given != nullptr) {
      packed = const_cast<float*>(given);
      packed_steps = true;
    } else if (lanes != nullptr) {
      packed_steps = packed_capacity >= static_cast<int64_t>(lanes_forward_size(d));
      if (packed_steps) simd::pack_lanes(GH, Hout, w.w_hh, Hout, false, packed, nthreads);
    } else {
      packed_steps = packed_capacity > 0 && packed_gemm_pack(d.batch, GH, Hout, w.w_hh, Hout, false,
                                                             packed, packed_capacity);
    }
    if (!packed_steps) lanes = nullptr;
  }
  // Full-batch products go to the stage when oneDNN would not add them into the
  // gates rows in place (step_stage_size).
  T* stage = nullptr;
  if constexpr (std::is_same_v<T, float>)
    if (g_stage_step_products && packed_steps && lanes == nullptr &&
        L.stage_end - L.stage >= static_cast<size_t>(d.batch * GH) &&
        !packed_gemm_takes_strides(d.batch, GH, Hout, Hout, ldg))
      stage = workspace + L.stage;

  // g_rows[:, 0:GH] += h_rows W_hh^T for m rows (g_rows: row stride ldg), by
  // the packed product when it takes m rows, so that the rows starting from h0
  // go through the same product as the others. (Through sgemm they differed in
  // the last bits between 1 and 2 threads, which split some of these shapes
  // along K; the packed products agreed on 1 and 2 threads wherever tried.)
  // Returns true when the product went to the stage instead, for the pointwise
  // pass to add.
  auto recurrent_term = [&](int64_t m, const T* h_rows, int64_t ld_h, T* g_rows) {
    if constexpr (std::is_same_v<T, float>) {
      if (bf16_matmul) {
        to_bf16_bits(h_rows, m, Hout, ld_h, act16, nthreads);
        if (bf16_gemm(m, GH, Hout, act16.data(), Hout, w_hh16.data(), Hout, prod.data(), GH)) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (m * GH >= kParallelMinElements)
          for (int64_t b = 0; b < m; ++b) add_to_row(GH, prod.data() + b * GH, g_rows + b * ldg);
          return false;
        }
      }
    }
    h_rows = product_rows(m, h_rows, ld_h);
    if constexpr (std::is_same_v<T, float>) {
      if (lanes != nullptr) {
        lanes->lanes_gemm(simd::LanesGemm{m, GH, Hout, h_rows, ld_h, packed, g_rows, ldg, nthreads});
        return false;
      }
      if (packed_steps && m == d.batch) {
        if (stage != nullptr) {
          packed_gemm(m, GH, Hout, h_rows, ld_h, packed, w.w_hh, Hout, false, stage, GH, false);
          return true;
        }
        packed_gemm(m, GH, Hout, h_rows, ld_h, packed, w.w_hh, Hout, false, g_rows, ldg);
        return false;
      }
    }
    gemm(false, true, m, GH, Hout, T(1), h_rows, ld_h, w.w_hh, Hout, T(1), g_rows, ldg);
    return false;
  };

  const Pointwise<T, Cell> pointwise(d.cell);
  for_each_step(d, rows, true, [&](const Step& s) {
    T* g = gates + s.off * ldg;  // [n, S*H], row stride ldg
    const T* y_prev = s.n_cont > 0 ? y + s.off_prev * ldy : y;  // [n_cont, Hout]
    // Recurrent term: gates[:, 0:GH] += h_prev W_hh^T, h_prev being the previous
    // step's y rows and, for rows starting here, h0 (nothing to add when null).
    // A staged product took the whole batch in one of the two calls (n_cont is
    // then the batch, or 0 with every row starting from h0), so the stage's rows
    // are the step's rows either way.
    bool staged = recurrent_term(s.n_cont, y_prev, ldy, g);
    if (h0 != nullptr && s.n > s.n_cont)
      staged = recurrent_term(s.n - s.n_cont, h0 + s.n_cont * Hout, Hout, g + s.n_cont * ldg) || staged;

    // State written this step: c [n, H] and the unprojected h [n, H] (m when
    // projecting, else straight into y).
    T* c_cur = c_buf;         // [n, H]
    const T* c_prev = c_buf;  // [n_cont, H]
    if constexpr (Training && Cell::kHasCell) {
      c_cur = c_buf + s.off * H;
      if (s.n_cont > 0) c_prev = c_buf + s.off_prev * H;
    }
    T* h_out = P > 0 ? (Training ? m_buf + s.off * H : m_buf) : y + s.off * ldy;
    const int64_t ld_h_out = P > 0 ? H : ldy;
    parallel_rows(s.n, Cell::kGates, H, nthreads, [&](int64_t b, int64_t j0, int64_t j1) {
      const bool cont = b < s.n_cont;
      const T* hp = cont ? y_prev + b * ldy : (h0 != nullptr ? h0 + b * Hout : zeros);
      const T* cp = nullptr;
      T* cc = nullptr;
      if constexpr (Cell::kHasCell) {
        cp = cont ? c_prev + b * H : (c0 != nullptr ? c0 + b * H : zeros);
        cc = c_cur + b * H;
      }
      if (staged)  // the whole batch's product: row b is the stage's row b
        for (int q = 0; q < Cell::kGates; ++q)
          add_to_row(j1 - j0, stage + b * GH + q * H + j0, g + b * ldg + q * H + j0);
      pointwise.template forward<Training>(j1 - j0, H, g + b * ldg + j0, bias + j0, hp + j0,
                                           cp != nullptr ? cp + j0 : nullptr,
                                           cc != nullptr ? cc + j0 : nullptr,
                                           h_out + b * ld_h_out + j0);
    });
    if (P > 0) gemm(false, true, s.n, P, H, T(1), h_out, H, w.w_hr, H, T(0), y + s.off * ldy, ldy);

    for (int64_t b = s.n_next_cont; b < s.n; ++b) {
      if (h_n != nullptr) copy_row(Hout, y + (s.off + b) * ldy, h_n + b * Hout);
      if constexpr (Cell::kHasCell)
        if (c_n != nullptr) copy_row(H, c_cur + b * H, c_n + b * H);
    }
  });
}

// The beta for the next product into a parameter gradient: `beta` as it is (0
// before the first product when gradients are written, not accumulated), which
// is 1 from then on.
template <class T>
T next_beta(T& beta) {
  const T b = beta;
  beta = T(1);
  return b;
}

// dW_hh += sum over the steps of a chunk of dgates_t[:, 0:GH]^T h_{t-1}: the
// continuing rows of consecutive steps of equal batch are contiguous both in
// dgates and in y, so each run of them is one GEMM; rows starting from h0 add
// their own product. dgates holds the chunk's packed rows [r0, r1). beta: that
// of the next product into dw_hh (0 before the first when the gradients are
// written, not accumulated), 1 after any.
template <class T>
void recurrent_weight_grad(const RnnLayerDims& d, int64_t rows, int64_t r0, int64_t r1,
                           int64_t GH, int64_t ldd, const T* dgates, const T* y, int64_t ldy,
                           const T* h0, T* dw_hh, T& beta) {
  const int64_t Hout = hidden_out_size(d);
  int64_t run_dg = 0, run_y = 0, run_rows = 0;
  auto flush = [&] {
    if (run_rows > 0)
      gemm(true, false, GH, Hout, run_rows, T(1), dgates + (run_dg - r0) * ldd, ldd, y + run_y * ldy,
           ldy, next_beta(beta), dw_hh, Hout);
    run_rows = 0;
  };
  // Ascending packed rows in both directions.
  for_each_step(d, rows, !d.reverse, [&](const Step& s) {
    if (s.off < r0 || s.off >= r1) return;
    if (s.n_cont > 0) {
      if (run_rows > 0 && s.off == run_dg + run_rows && s.off_prev == run_y + run_rows) {
        run_rows += s.n_cont;
      } else {
        flush();
        run_dg = s.off, run_y = s.off_prev, run_rows = s.n_cont;
      }
    }
    if (s.n_cont < s.n) {
      flush();
      if (h0 != nullptr)
        gemm(true, false, GH, Hout, s.n - s.n_cont, T(1), dgates + (s.off + s.n_cont - r0) * ldd, ldd,
             h0 + s.n_cont * Hout, Hout, next_beta(beta), dw_hh, Hout);
    }
  });
  flush();
}

template <class T, class Cell>
void backward_impl(const RnnLayerDims& d, const RnnWeights<T>& w, const T* x, int64_t ldx,
                   const T* h0, const T* c0, const T* y, int64_t ldy, const T* workspace,
                   const T* dy, int64_t lddy, const T* dh_n, const T* dc_n, T* dx, int64_t lddx,
                   T beta_dx, T* dh0, T* dc0, const RnnGrads<T>& dw, T* backward_workspace) {
  const int64_t I = d.input_size, H = d.hidden_size, P = d.proj_size;
  const int64_t Hout = hidden_out_size(d);
  const int64_t GH = Cell::kGates * H;
  const int64_t ldd = gates_row_stride(d);  // row stride of gates and dgates
  const int64_t rows = packed_rows(d);
  const ForwardLayout FL = forward_layout(d, true);
  workspace = align_base(workspace);
  backward_workspace = align_base(backward_workspace);
  // Post-activations [rows, S*H], row stride ldg (y for the Elman cells).
  const bool in_y = gates_in_output(d);
  const T* gates = in_y ? y : workspace + FL.gates;
  const int64_t ldg = in_y ? ldy : ldd;
  const T* c_all = workspace + FL.c;  // [rows, H]
  const T* m_all = workspace + FL.m;  // [rows, H]
  const BackwardLayout L = backward_layout(d);
  // [C, S*H], row stride ldd: over the saved gates when allowed (each row's
  // pointwise pass reads its gates before writing its dgates), else in the
  // forward's packed-weights area, which is free once the forward is done, else
  // in the backward workspace.
  T* dgates = dgates_over_gates(d)          ? const_cast<T*>(gates)
              : L.dgates_in_forward_workspace ? const_cast<T*>(workspace) + FL.packed
                                              : backward_workspace + L.dgates;
  T* dh_state = backward_workspace + L.dh_state;  // [N, Hout]
  T* dc_state = backward_workspace + L.dc_state;  // [N, H]
  T* dh_proj = backward_workspace + L.dh_proj;    // [C, P]
  T* dm = backward_workspace + L.dm;              // [N, H]
  T* ones = backward_workspace + L.ones;          // [C]
  T* zeros = backward_workspace + L.zeros;        // [max(H, Hout)]
  set_row(std::max(H, Hout), T(0), zeros);
  set_row(L.chunk, T(1), ones);
  const int nthreads = rnnkit::get_num_threads();
  const simd::Kernels* small = nullptr;
  if constexpr (std::is_same_v<T, float>)
    if (small_batch_backward_path(d)) small = simd::active_kernels();
  const Pointwise<T, Cell> pointwise(d.cell);
  constexpr bool split_n = Cell::kGateStride != Cell::kGates;
  // Full-batch steps take W_hh packed once for all of them; on the lanes
  // path every step does.
  bool packed_dh = false;
  const simd::Kernels* lanes = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    if (L.packed_dh_end > L.packed_dh) {
      lanes = lanes_path(d);
      const int64_t capacity = static_cast<int64_t>(L.packed_dh_end - L.packed_dh);
      if (lanes != nullptr && capacity >= simd::lanes_packed_size(Hout, GH)) {
        simd::pack_lanes(Hout, GH, w.w_hh, Hout, true, backward_workspace + L.packed_dh, nthreads);
        packed_dh = true;
      } else {
        lanes = nullptr;
        packed_dh = packed_gemm_pack(d.batch, Hout, GH, w.w_hh, Hout, true, backward_workspace + L.packed_dh,
                                     capacity);
      }
    }
  }
  // Full-batch dh products read dgates from the stage when oneDNN would not
  // take their strided rows in place (step_stage_size): the forward's, free
  // once the forward is done, and the backward may overwrite the forward
  // workspace wherever it packs W_hh for these products (backward_packed_size).
  T* stage = nullptr;
  if constexpr (std::is_same_v<T, float>)
    if (g_stage_step_products && packed_dh && lanes == nullptr &&
        FL.stage_end - FL.stage >= static_cast<size_t>(d.batch * GH) &&
        !packed_gemm_takes_strides(d.batch, Hout, GH, ldd, Hout))
      stage = const_cast<T*>(workspace) + FL.stage;
  const int64_t GH_first = split_n ? 2 * H : GH;

  // The reverse walk over steps [k0, k1) (walk order), whose rows are [r0, r1).
  auto walk_steps = [&](int64_t k0, int64_t k1, int64_t r0) {
    if constexpr (std::is_same_v<T, float>) {
      if (small != nullptr) {
        simd::SmallBatchBackward a;
        a.dims = &d;
        a.walk_begin = k0;
        a.walk_end = k1;
        a.row0 = r0;
        a.w_hh = w.w_hh;
        a.gates = gates;
        a.ldg = ldg;
        a.c_all = c_all;
        a.h0 = h0;
        a.c0 = c0;
        a.y = y;
        a.ldy = ldy;
        a.dy = dy;
        a.lddy = lddy;
        a.dh_n = dh_n;
        a.dc_n = dc_n;
        a.dgates = dgates;
        a.ldd = ldd;
        a.dh_state = dh_state;
        a.dc_state = dc_state;
        a.dh0 = dh0;
        a.dc0 = dc0;
        a.zeros = zeros;
        a.stream_w_hh = stream_w_hh_in_backward(d);
        a.prefetch_bytes = g_small_batch_prefetch;
        a.num_threads = nthreads;
        small->small_batch_backward(a);
        return;
      }
    }
    int64_t k = 0;
    for_each_step(d, rows, false, [&](const Step& s) {
      const bool mine = k >= k0 && k < k1;
      ++k;
      if (!mine) return;
      // Rows whose sequence ends at this step take dh_n/dc_n; the others already
      // hold the recurrent gradient from the step after.
      for (int64_t b = s.n_next_cont; b < s.n; ++b) {
        if (dh_n != nullptr)
          copy_row(Hout, dh_n + b * Hout, dh_state + b * Hout);
        else
          set_row(Hout, T(0), dh_state + b * Hout);
        if constexpr (Cell::kHasCell) {
          if (dc_n != nullptr)
            copy_row(H, dc_n + b * H, dc_state + b * H);
          else
            set_row(H, T(0), dc_state + b * H);
        }
      }

      // With a projection the cell sees dm = (dy + dh) W_hr; without, dy + dh itself.
      if (P > 0) {
        T* dhp = dh_proj + (s.off - r0) * P;  // [n, P]
        for (int64_t b = 0; b < s.n; ++b) {
          const T* dyr = dy != nullptr ? dy + (s.off + b) * lddy : zeros;
          const T* dhr = dh_state + b * Hout;
          T* dst = dhp + b * P;
          for (int64_t j = 0; j < P; ++j) dst[j] = dyr[j] + dhr[j];
        }
        gemm(false, false, s.n, H, P, T(1), dhp, P, w.w_hr, H, T(0), dm, H);
      }

      const T* g = gates + s.off * ldg;
      T* dg = dgates + (s.off - r0) * ldd;
      // dh_prev's product takes m rows of dgates (rows starting here only feed
      // dh0), through the stage when there is one and it takes the whole batch.
      const int64_t m = dh0 != nullptr ? s.n : s.n_cont;
      const bool staged = stage != nullptr && m == d.batch;
      parallel_rows(s.n, Cell::kGates, H, nthreads, [&](int64_t b, int64_t j0, int64_t j1) {
        const T* dh_a;
        const T* dh_b;
        if (P > 0) {
          dh_a = dm + b * H;
          dh_b = zeros;
        } else {
          dh_a = dy != nullptr ? dy + (s.off + b) * lddy : zeros;
          dh_b = dh_state + b * Hout;
        }
        const T* hp = b < s.n_cont ? y + (s.off_prev + b) * ldy : (h0 != nullptr ? h0 + b * Hout : zeros);
        const T* cp = nullptr;
        const T* cc = nullptr;
        T* dc = nullptr;
        if constexpr (Cell::kHasCell) {
          cp = (b < s.n_cont ? c_all + (s.off_prev + b) * H : (c0 != nullptr ? c0 + b * H : zeros)) + j0;
          cc = c_all + (s.off + b) * H + j0;
          dc = dc_state + b * H + j0;
        }
        pointwise.backward(j1 - j0, H, g + b * ldg + j0, hp + j0, cp, cc, dh_a + j0, dh_b + j0,
                           dh_state + b * Hout + j0, dc, dg + b * ldd + j0);
        if (staged)
          for (int q = 0; q < Cell::kGates; ++q)
            copy_row(j1 - j0, dg + b * ldd + q * H + j0, stage + b * GH + q * H + j0);
      });

      // dh_prev = dgates[:, 0:GH] W_hh (+ the GRU's pointwise term already there).
      bool done = false;
      if constexpr (std::is_same_v<T, float>) {
        if (packed_dh && (lanes != nullptr || m == d.batch) && m > 0) {
          if (!Cell::kDirectHiddenGrad) set_row(m * Hout, T(0), dh_state);
          if (lanes != nullptr)
            lanes->lanes_gemm(simd::LanesGemm{m, Hout, GH, dg, ldd, backward_workspace + L.packed_dh, dh_state,
                                              Hout, nthreads});
          else
            packed_gemm(m, Hout, GH, staged ? stage : dg, staged ? GH : ldd, backward_workspace + L.packed_dh,
                        w.w_hh, Hout, true, dh_state, Hout);
          done = true;
        }
      }
      if (!done)
        gemm(false, false, m, Hout, GH, T(1), dg, ldd, w.w_hh, Hout,
             Cell::kDirectHiddenGrad ? T(1) : T(0), dh_state, Hout);
      for (int64_t b = s.n_cont; b < s.n; ++b) {
        if (dh0 != nullptr) copy_row(Hout, dh_state + b * Hout, dh0 + b * Hout);
        if constexpr (Cell::kHasCell)
          if (dc0 != nullptr) copy_row(H, dc_state + b * H, dc0 + b * H);
      }
    });
  };

  // Products over the chunk's rows [r0, r1). Input side: columns [0, GH) of
  // dgates, except the GRU whose n-part is column block [3H, 4H).
  // The beta of each parameter gradient's next product: 0 until its first when
  // they are written (dw.overwrite), else 1.
  const T first_beta = dw.overwrite ? T(0) : T(1);
  T beta_w_ih = first_beta, beta_w_hh = first_beta, beta_b_ih = first_beta, beta_b_hh = first_beta,
    beta_w_hr = first_beta;
  auto chunk_products = [&](int64_t r0, int64_t r1) {
    const int64_t R = r1 - r0;
    const T* xr = x + r0 * ldx;
    if (dw.dw_ih != nullptr) {
      const T beta = next_beta(beta_w_ih);  // both products write disjoint rows
      gemm(true, false, GH_first, I, R, T(1), dgates, ldd, xr, ldx, beta, dw.dw_ih, I);
      if (split_n) gemm(true, false, H, I, R, T(1), dgates + 3 * H, ldd, xr, ldx, beta, dw.dw_ih + 2 * H * I, I);
    }
    if (dx != nullptr) {
      T* dxr = dx + r0 * lddx;
      gemm(false, false, R, I, GH_first, T(1), dgates, ldd, w.w_ih, I, beta_dx, dxr, lddx);
      if (split_n)
        gemm(false, false, R, I, H, T(1), dgates + 3 * H, ldd, w.w_ih + 2 * H * I, I, T(1), dxr, lddx);
    }
    if (dw.dw_hh != nullptr)
      recurrent_weight_grad(d, rows, r0, r1, GH, ldd, dgates, y, ldy, h0, dw.dw_hh, beta_w_hh);
    if (d.has_bias && (dw.db_ih != nullptr || dw.db_hh != nullptr)) {
      if (dw.db_hh != nullptr)
        gemm(false, false, 1, GH, R, T(1), ones, R, dgates, ldd, next_beta(beta_b_hh), dw.db_hh, GH);
      if (dw.db_ih != nullptr) {
        const T beta = next_beta(beta_b_ih);
        gemm(false, false, 1, GH_first, R, T(1), ones, R, dgates, ldd, beta, dw.db_ih, GH);
        if (split_n) gemm(false, false, 1, H, R, T(1), ones, R, dgates + 3 * H, ldd, beta, dw.db_ih + 2 * H, GH);
      }
    }
    if (P > 0 && dw.dw_hr != nullptr)
      gemm(true, false, P, H, R, T(1), dh_proj, P, m_all + r0 * H, H, next_beta(beta_w_hr), dw.dw_hr, H);
  };

  // Chunks: runs of consecutive walk steps of at most L.chunk rows (at least one
  // step); their rows are contiguous in the packed layout.
  int64_t k = 0, k0 = 0, r0 = rows, r1 = 0;
  for_each_step(d, rows, false, [&](const Step& s) {
    if (k > k0 && r1 - r0 + s.n > L.chunk) {
      walk_steps(k0, k, r0);
      chunk_products(r0, r1);
      k0 = k, r0 = rows, r1 = 0;
    }
    r0 = std::min(r0, s.off);
    r1 = std::max(r1, s.off + s.n);
    ++k;
  });
  walk_steps(k0, k, r0);
  chunk_products(r0, r1);
  // A dW_hh that no product reached (one step from zero initial states, say)
  // is written all the same.
  if (dw.dw_hh != nullptr && beta_w_hh == T(0)) set_row(GH * Hout, T(0), dw.dw_hh);
}

template <class Fn>
void dispatch_cell(CellType cell, Fn&& fn) {
  switch (cell) {
    case CellType::RNN_TANH: fn(ElmanCell<false>{}); return;
    case CellType::RNN_RELU: fn(ElmanCell<true>{}); return;
    case CellType::LSTM: fn(LstmCell{}); return;
    case CellType::GRU: fn(GruCell{}); return;
  }
  RNNKIT_CHECK(false, "rnn kernel: unknown cell type ", static_cast<int>(cell));
}

}  // namespace

int gate_count(CellType cell) {
  switch (cell) {
    case CellType::RNN_TANH:
    case CellType::RNN_RELU: return 1;
    case CellType::LSTM: return 4;
    case CellType::GRU: return 3;
  }
  RNNKIT_CHECK(false, "gate_count: unknown cell type ", static_cast<int>(cell));
  return 0;
}

int64_t hidden_out_size(const RnnLayerDims& dims) {
  return dims.proj_size > 0 ? dims.proj_size : dims.hidden_size;
}

int64_t packed_rows(const RnnLayerDims& dims) {
  int64_t rows = 0;
  for (int64_t t = 0; t < dims.steps; ++t) rows += dims.batch_sizes[t];
  return rows;
}

void check_rnn_dims(const RnnLayerDims& d) {
  gate_count(d.cell);  // throws on a cell value outside the enum
  RNNKIT_CHECK(d.input_size > 0, "rnn kernel: input_size must be positive, got ", d.input_size);
  RNNKIT_CHECK(d.hidden_size > 0, "rnn kernel: hidden_size must be positive, got ", d.hidden_size);
  RNNKIT_CHECK(d.proj_size >= 0, "rnn kernel: proj_size must be non-negative, got ", d.proj_size);
  RNNKIT_CHECK(d.proj_size == 0 || d.cell == CellType::LSTM,
               "rnn kernel: proj_size is only supported by LSTM, got proj_size ", d.proj_size);
  RNNKIT_CHECK(d.proj_size < d.hidden_size, "rnn kernel: proj_size has to be smaller than hidden_size (",
               d.hidden_size, "), got ", d.proj_size);
  RNNKIT_CHECK(d.batch > 0, "rnn kernel: batch must be positive, got ", d.batch);
  RNNKIT_CHECK(d.steps > 0, "rnn kernel: steps must be positive, got ", d.steps);
  RNNKIT_CHECK(d.batch_sizes != nullptr, "rnn kernel: batch_sizes is null");
  RNNKIT_CHECK(d.batch_sizes[0] == d.batch, "rnn kernel: batch_sizes[0] must equal batch (", d.batch,
               "), got ", d.batch_sizes[0]);
  for (int64_t t = 1; t < d.steps; ++t)
    RNNKIT_CHECK(d.batch_sizes[t] > 0 && d.batch_sizes[t] <= d.batch_sizes[t - 1],
                 "rnn kernel: batch_sizes must be positive and non-increasing, got batch_sizes[", t - 1,
                 "] = ", d.batch_sizes[t - 1], " and batch_sizes[", t, "] = ", d.batch_sizes[t]);
}

size_t rnn_forward_workspace_size(const RnnLayerDims& dims, bool training) {
  check_rnn_dims(dims);
  return forward_layout(dims, training).total;
}

size_t rnn_forward_scratch_size(const RnnLayerDims& dims) {
  check_rnn_dims(dims);
  const size_t size = dims.separate_scratch ? recurrent_scratch_size(dims) : 0;
  return size > 0 ? size + kAlignElements : 0;
}

size_t rnn_backward_workspace_size(const RnnLayerDims& dims) {
  check_rnn_dims(dims);
  return backward_layout(dims).total;
}

namespace tuning {
void set_backward_chunk_rows(int64_t rows) { g_chunk_rows_cap = rows > 0 ? rows : 0; }
int64_t default_lanes_min_weights() {
  static const int64_t floats = [] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    const int64_t l2_bytes = l2 > 0 ? l2 : int64_t{2} << 20;  // unknown: 2 MiB per core
    const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
    return 3 * l2_bytes * cores / 2 / static_cast<int64_t>(sizeof(float));
  }();
  return floats;
}

void set_stage_step_products(bool stage) { g_stage_step_products = stage; }
void set_lanes_min_weights(int64_t floats) { g_lanes_min_weights = floats >= 0 ? floats : -1; }
void set_streamed_grad_min_bytes(int64_t bytes) { g_streamed_grad_min_bytes = bytes >= 0 ? bytes : -1; }
void set_split_min_bytes(int64_t bytes) { g_split_min_bytes = bytes >= 0 ? bytes : -1; }
void set_packed_projection(bool on) { g_packed_projection = on; }
void set_small_batch_proj(bool on) { g_small_batch_proj = on; }
void set_bf16_dot_hardware(bool on) { g_bf16_dot_hardware = on; }
void set_small_batch_prefetch(int64_t bytes) { g_small_batch_prefetch = bytes >= 0 ? bytes : -1; }
const char* forward_path(const RnnLayerDims& dims) {
  check_rnn_dims(dims);
  switch (forward_packed_kind(dims)) {
    case PackedKind::kSmallBatch: return "small-batch";
    case PackedKind::kLanes: return "lanes";
    case PackedKind::kGemm:
    case PackedKind::kInput:
    case PackedKind::kProjection: break;
  }
  return "gemm";
}

bool self_packs_projection(const RnnLayerDims& dims) {
  check_rnn_dims(dims);
  return self_packed_projection(dims);
}

const char* backward_path(const RnnLayerDims& dims) {
  check_rnn_dims(dims);
  return simd::active_kernels() != nullptr && small_batch_backward_path(dims) ? "small-batch" : "gemm";
}

}  // namespace tuning

const char* packed_precision_name(PackedPrecision precision) {
  switch (precision) {
    case PackedPrecision::kFloat32: return "float32";
    case PackedPrecision::kBFloat16: return "bfloat16";
    case PackedPrecision::kBFloat16Products: return "bfloat16 products";
  }
  return "?";
}

size_t rnn_packed_weights_size(const RnnLayerDims& dims, PackedPrecision precision) {
  check_rnn_dims(dims);
  const int64_t H = dims.hidden_size, G = gate_count(dims.cell), K = hidden_out_size(dims);
  if (small_batch_path(dims) || small_batch_proj_path(dims)) {
    if (precision != PackedPrecision::kFloat32)
      return kPackedHeader + static_cast<size_t>(simd::packed_recurrent_size_bf16(G, H, K) + 1) / 2;
    return kPackedHeader + small_packed_size(dims);
  }
  if (precision != PackedPrecision::kFloat32) return 0;
  if (lanes_path(dims) != nullptr) return kPackedHeader + lanes_forward_size(dims);
  const int64_t n = packed_gemm_size(dims.batch, G * H, hidden_out_size(dims));
  return n > 0 ? kPackedHeader + static_cast<size_t>(n) : 0;
}

namespace {

// simd::pack_recurrent of all blocks of w [G*H, K]. Blocks of gate rows are
// packed independently: one range per thread, as the forward packs its slices
// (the work is bound by memory bandwidth). Small weights (below 64 Ki, 256
// KiB) are packed by the calling thread, where starting the team would cost
// about as much (not tuned further).
void pack_blocks(int64_t G, int64_t H, int64_t K, const float* w, float* packed, bool gate_major) {
  constexpr int64_t kParallelPackMinWeights = int64_t{1} << 16;
  const int64_t blocks = (H + simd::kPackBlock - 1) / simd::kPackBlock;
  const int64_t nthreads = std::min<int64_t>(rnnkit::get_num_threads(), blocks);
#pragma omp parallel num_threads(static_cast<int>(nthreads)) if (nthreads > 1 && G * H * K >= kParallelPackMinWeights)
  {
    const int64_t n = omp_get_num_threads(), t = omp_get_thread_num();
    simd::pack_recurrent(G, H, K, w, packed, blocks * t / n, blocks * (t + 1) / n, gate_major);
  }
}

}  // namespace

void rnn_pack_weights(const RnnLayerDims& dims, const float* w_hh, float* packed,
                      PackedPrecision precision) {
  const size_t size = rnn_packed_weights_size(dims, precision);
  RNNKIT_CHECK(size > 0, "rnn_pack_weights: no packed form for these dims and precision (batch ",
               dims.batch, ", proj_size ", dims.proj_size, ", ",
               packed_precision_name(precision), ")");
  RNNKIT_CHECK(w_hh != nullptr && packed != nullptr, "rnn_pack_weights: w_hh and packed are required");
  const int64_t H = dims.hidden_size, G = gate_count(dims.cell), Hout = hidden_out_size(dims);
  const bool small = small_batch_path(dims) || small_batch_proj_path(dims);
  const bool lanes = lanes_path(dims) != nullptr;
  PackedHeader header = packed_header(dims,
                                      small   ? PackedKind::kSmallBatch
                                      : lanes ? PackedKind::kLanes
                                              : PackedKind::kGemm,
                                      precision);
  const bool gate_major = small && small_batch_gate_major(dims);
  header.gate_major = gate_major ? 1 : 0;
  if (!small && !lanes) {
    header.batch = static_cast<uint32_t>(dims.batch);
    header.threads = static_cast<uint32_t>(rnnkit::get_num_threads());
    header.floats = static_cast<uint32_t>(size - kPackedHeader);
  }
  write_packed_header(header, packed);
  float* body = packed + kPackedHeader;
  if (lanes)
    simd::pack_lanes(G * H, Hout, w_hh, Hout, false, body, rnnkit::get_num_threads());
  else if (!small)
    RNNKIT_CHECK(packed_gemm_pack(dims.batch, G * H, Hout, w_hh, Hout, false, body,
                                  static_cast<int64_t>(size - kPackedHeader)),
                 "rnn_pack_weights: oneDNN could not pack these weights");
  else if (precision != PackedPrecision::kFloat32)
    simd::pack_recurrent_bf16(G, H, Hout, w_hh, reinterpret_cast<uint16_t*>(body), gate_major);
  else
    pack_blocks(G, H, Hout, w_hh, body, gate_major);
}

size_t rnn_packed_input_weights_size(const RnnLayerDims& dims, PackedPrecision precision) {
  check_rnn_dims(dims);
  if (precision == PackedPrecision::kBFloat16) return 0;  // that forward takes the float32 W_ih
  if (precision == PackedPrecision::kBFloat16Products) {
    if (rnn_packed_weights_size(dims, precision) == 0) return 0;
    return kPackedHeader + static_cast<size_t>(simd::packed_recurrent_size_bf16(gate_count(dims.cell),
                                                                                dims.hidden_size, dims.input_size) +
                                               1) / 2;
  }
  if (!packed_projection_path(dims)) return 0;
  return kPackedHeader +
         static_cast<size_t>(simd::packed_recurrent_size(gate_count(dims.cell), dims.hidden_size, dims.input_size));
}

void rnn_pack_input_weights(const RnnLayerDims& dims, const float* w_ih, float* packed,
                            PackedPrecision precision) {
  const size_t size = rnn_packed_input_weights_size(dims, precision);
  RNNKIT_CHECK(size > 0,
               "rnn_pack_input_weights: no packed form for these dims and precision (the small-batch forward of "
               "the LSTM and the GRU with AVX2 or AVX-512 takes one in float32, and every cell's bfloat16 products; "
               "got ", gate_count(dims.cell), " gates, batch ", dims.batch, ", hidden_size ", dims.hidden_size, ", ",
               packed_precision_name(precision), ")");
  RNNKIT_CHECK(w_ih != nullptr && packed != nullptr, "rnn_pack_input_weights: w_ih and packed are required");
  PackedHeader header = packed_header(dims, PackedKind::kInput, precision);
  header.input_size = static_cast<uint32_t>(dims.input_size);
  if (precision == PackedPrecision::kBFloat16Products) {
    write_packed_header(header, packed);
    simd::pack_recurrent_bf16(gate_count(dims.cell), dims.hidden_size, dims.input_size, w_ih,
                              reinterpret_cast<uint16_t*>(packed + kPackedHeader), false);
    return;
  }
  const bool gate_major = input_gate_major(dims);
  header.gate_major = gate_major ? 1 : 0;
  write_packed_header(header, packed);
  pack_blocks(gate_count(dims.cell), dims.hidden_size, dims.input_size, w_ih, packed + kPackedHeader, gate_major);
}

bool rnn_packed_input_weights_fit(const RnnLayerDims& dims, const float* packed, PackedPrecision precision) {
  check_rnn_dims(dims);
  RNNKIT_CHECK(packed != nullptr, "rnn_packed_input_weights_fit: packed is null");
  const PackedHeader h = read_packed_header(packed);
  if (!input_packed_for(h, dims) || h.precision != static_cast<uint32_t>(precision)) return false;
  if (precision == PackedPrecision::kBFloat16Products) return rnn_packed_input_weights_size(dims, precision) > 0;
  return precision == PackedPrecision::kFloat32 && input_packed_taken(h, dims);
}

size_t rnn_packed_projection_weights_size(const RnnLayerDims& dims) {
  check_rnn_dims(dims);
  if (!small_batch_proj_path(dims)) return 0;
  return kPackedHeader + static_cast<size_t>(simd::packed_recurrent_size(1, dims.proj_size, dims.hidden_size));
}

void rnn_pack_projection_weights(const RnnLayerDims& dims, const float* w_hr, float* packed) {
  const size_t size = rnn_packed_projection_weights_size(dims);
  RNNKIT_CHECK(size > 0,
               "rnn_pack_projection_weights: no packed form for these dims (the small-batch forward of an LSTM "
               "with a projection, up to 8 rows and from 2 steps, with AVX2 or AVX-512, takes one; got "
               "proj_size ", dims.proj_size, ", batch ", dims.batch, ", steps ", dims.steps, ")");
  RNNKIT_CHECK(w_hr != nullptr && packed != nullptr, "rnn_pack_projection_weights: w_hr and packed are required");
  write_packed_header(packed_header(dims, PackedKind::kProjection, PackedPrecision::kFloat32), packed);
  pack_blocks(1, dims.proj_size, dims.hidden_size, w_hr, packed + kPackedHeader, false);
}

bool rnn_packed_projection_weights_fit(const RnnLayerDims& dims, const float* packed) {
  check_rnn_dims(dims);
  RNNKIT_CHECK(packed != nullptr, "rnn_packed_projection_weights_fit: packed is null");
  const PackedHeader h = read_packed_header(packed);
  return projection_packed_for(h, dims) && small_batch_proj_path(dims);
}

bool rnn_forward_takes_packed(const RnnLayerDims& dims) {
  // rnn_pack_weights writes the small-batch layout wherever small_batch_path
  // holds, which the forward takes only with vector kernels.
  if (small_batch_path(dims)) return simd::active_kernels() != nullptr;
  return rnn_packed_weights_size(dims) > 0;  // small_batch_proj_path included
}

bool rnn_packed_weights_fit(const RnnLayerDims& dims, const float* packed) {
  check_rnn_dims(dims);
  RNNKIT_CHECK(packed != nullptr, "rnn_packed_weights_fit: packed is null");
  const PackedHeader h = read_packed_header(packed);
  if (!packed_for(h, dims) || h.kind == static_cast<uint32_t>(PackedKind::kInput) ||
      h.kind == static_cast<uint32_t>(PackedKind::kProjection))
    return false;  // another weight's packing
  PackedPrecision precision = PackedPrecision::kFloat32;
  return packed_body(dims, packed, forward_packed_kind(dims), false, &precision) != nullptr;
}

template <class T>
void rnn_forward(const RnnLayerDims& dims, const RnnWeights<T>& w, const T* x, int64_t ldx,
                 const T* h0, const T* c0, T* y, int64_t ldy, T* h_n, T* c_n, T* workspace,
                 bool training, T* scratch) {
  check_common(dims, w, ldx, ldy, workspace, "rnn_forward");
  RNNKIT_CHECK(x != nullptr && y != nullptr, "rnn_forward: x and y are required");
  RNNKIT_CHECK(!(w.bf16_products && training),
               "rnn_forward: the bfloat16 products are for inference only (training = true)");
  RNNKIT_CHECK(scratch != nullptr || rnn_forward_scratch_size(dims) == 0 ||
                   (std::is_same_v<T, float> && w.w_hh_packed != nullptr &&
                    rnn_packed_weights_fit(dims, reinterpret_cast<const float*>(w.w_hh_packed))),
               "rnn_forward: dims.separate_scratch is set but scratch is null (and w_hh_packed does not fit)");
  dispatch_cell(dims.cell, [&](auto cell) {
    using Cell = decltype(cell);
    if (training)
      forward_impl<T, Cell, true>(dims, w, x, ldx, h0, c0, y, ldy, h_n, c_n, workspace, scratch);
    else
      forward_impl<T, Cell, false>(dims, w, x, ldx, h0, c0, y, ldy, h_n, c_n, workspace, scratch);
  });
}

template <class T>
void rnn_forward(const RnnLayerDims& dims, const RnnWeights<T>& w, const T* x, int64_t ldx,
                 const T* h0, const T* c0, T* y, int64_t ldy, T* h_n, T* c_n, T* workspace,
                 bool training) {
  RNNKIT_CHECK(!dims.separate_scratch || rnn_forward_scratch_size(dims) == 0,
               "rnn_forward: dims.separate_scratch is set: pass the scratch buffer");
  rnn_forward<T>(dims, w, x, ldx, h0, c0, y, ldy, h_n, c_n, workspace, training, nullptr);
}

template <class T>
void rnn_backward(const RnnLayerDims& dims, const RnnWeights<T>& w, const T* x, int64_t ldx,
                  const T* h0, const T* c0, const T* y, int64_t ldy, const T* workspace,
                  const T* dy, int64_t lddy, const T* dh_n, const T* dc_n, T* dx,
                  int64_t lddx, T beta_dx, T* dh0, T* dc0, const RnnGrads<T>& dw,
                  T* backward_workspace) {
  check_common(dims, w, ldx, ldy, workspace, "rnn_backward");
  RNNKIT_CHECK(x != nullptr && y != nullptr, "rnn_backward: x and y are required");
  RNNKIT_CHECK(backward_workspace != nullptr, "rnn_backward: backward_workspace is null");
  RNNKIT_CHECK(dy == nullptr || lddy >= hidden_out_size(dims),
               "rnn_backward: lddy must be at least the output width (", hidden_out_size(dims),
               "), got ", lddy);
  RNNKIT_CHECK(dx == nullptr || lddx >= dims.input_size,
               "rnn_backward: lddx must be at least input_size (", dims.input_size, "), got ", lddx);
  dispatch_cell(dims.cell, [&](auto cell) {
    using Cell = decltype(cell);
    backward_impl<T, Cell>(dims, w, x, ldx, h0, c0, y, ldy, workspace, dy, lddy, dh_n, dc_n, dx,
                           lddx, beta_dx, dh0, dc0, dw, backward_workspace);
  });
}

#define RNNKIT_INSTANTIATE_RNN(T)                                                                \
  template void rnn_forward<T>(const RnnLayerDims&, const RnnWeights<T>&, const T*, int64_t,     \
                               const T*, const T*, T*, int64_t, T*, T*, T*, bool);               \
  template void rnn_forward<T>(const RnnLayerDims&, const RnnWeights<T>&, const T*, int64_t,     \
                               const T*, const T*, T*, int64_t, T*, T*, T*, bool, T*);           \
  template void rnn_backward<T>(const RnnLayerDims&, const RnnWeights<T>&, const T*, int64_t,    \
                                const T*, const T*, const T*, int64_t, const T*, const T*,       \
                                int64_t, const T*, const T*, T*, int64_t, T, T*, T*,             \
                                const RnnGrads<T>&, T*);

RNNKIT_INSTANTIATE_RNN(float)
RNNKIT_INSTANTIATE_RNN(double)
#undef RNNKIT_INSTANTIATE_RNN

}  // namespace rnnkit::kernels::cpu
