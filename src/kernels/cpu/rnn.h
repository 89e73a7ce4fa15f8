#pragma once
// Raw-pointer kernels for ONE direction of ONE recurrent layer (Elman tanh/relu,
// LSTM with optional projection, GRU), forward and backward through time, with
// PyTorch's semantics and gate orders (LSTM i,f,g,o; GRU r,z,n). Everything is
// row-major, rightmost index fastest.
//
// Sizes: I = input_size, H = hidden_size, P = proj_size (0 = none, LSTM only),
// Hout = P > 0 ? P : H (width of h and y), G = gate_count(cell), N = batch,
// T = steps, rows = sum(batch_sizes).
//
// Packed layout: step t owns rows [off_t, off_t + batch_sizes[t]) of x, y, dy and
// dx, with off_t = sum_{s<t} batch_sizes[s]. Row off_t + b at every step belongs to
// batch entry b, so the entries must be sorted by decreasing length (as
// pack_padded_sequence does). A padded batch is batch_sizes all equal to N.
//
// The forward direction walks t = 0..T-1; an entry whose sequence ends at step t
// leaves the batch there and its state at that point is its h_n/c_n. The reverse
// direction walks t = T-1..0; an entry joins the batch at its own last step,
// starting from its rows of h0/c0, and h_n/c_n is the state after step 0.
//
// No allocation inside the kernels: the caller provides the workspace, sized by
// the *_workspace_size functions, in elements of T. Accumulation rule: parameter
// gradients are accumulated (+=), activation gradients are written (=), except dx,
// which takes an explicit beta so that the two directions of a bidirectional layer
// can add into one buffer. Unless stated otherwise, no output may alias any other
// argument. Templates are instantiated for float and double in the .cpp.
#include <cstddef>
#include <cstdint>

namespace rnnkit::kernels::cpu {

enum class CellType { RNN_TANH, RNN_RELU, LSTM, GRU };

// Gates per cell: 1 for Elman, 4 for LSTM (i,f,g,o), 3 for GRU (r,z,n).
int gate_count(CellType cell);

struct RnnLayerDims {
  CellType cell = CellType::LSTM;
  int64_t input_size = 0;              // I
  int64_t hidden_size = 0;             // H: width of each gate and of c
  int64_t proj_size = 0;               // P: 0 = no projection; LSTM only, 0 < P < H
  int64_t batch = 0;                   // N = batch_sizes[0], the largest batch
  int64_t steps = 0;                   // T >= 1
  const int64_t* batch_sizes = nullptr;  // [T]: non-increasing, batch_sizes[0] == N, all > 0
  bool reverse = false;                // walk t = T-1 .. 0
  bool has_bias = true;
  // The forward-only part of the forward workspace (the kernels' packed copy of
  // W_hh, rnn_forward_scratch_size) comes as a separate `scratch` buffer, passed
  // to the rnn_forward overload that takes it, instead of inside the workspace.
  // A training step then holds it only while the forward runs: the memory-lean
  // choice for training. Every function below reads this flag.
  bool separate_scratch = false;
  // rnn_backward may overwrite the forward workspace: it then writes the
  // gradients w.r.t. the gates over the saved gates instead of into its own
  // workspace (smaller, and the weight gradients become whole-sequence products),
  // and that forward workspace serves no second backward. Set it for a backward
  // that is the last use of the forward (PyTorch's retain_graph = false). Read by
  // rnn_backward and rnn_backward_workspace_size only.
  bool overwrite_forward_workspace = false;
};

// Width of h, h0, h_n and of each row of y: P when projecting, else H.
int64_t hidden_out_size(const RnnLayerDims& dims);
// sum(batch_sizes): the number of rows of x, y, dy and dx.
int64_t packed_rows(const RnnLayerDims& dims);
// Throws rnnkit::Error naming the field when dims are inconsistent (non-positive
// sizes, proj_size with a cell other than LSTM or not below hidden_size, a
// batch_sizes that is null, increasing, non-positive or whose first entry is not
// batch). Every entry point below calls it.
void check_rnn_dims(const RnnLayerDims& dims);

template <class T>
struct RnnWeights {
  const T* w_ih = nullptr;  // [G*H, I]
  const T* w_hh = nullptr;  // [G*H, Hout]
  const T* b_ih = nullptr;  // [G*H], or null (required when has_bias)
  const T* b_hh = nullptr;  // [G*H], or null (required when has_bias)
  const T* w_hr = nullptr;  // [P, H] when P > 0, else ignored
  // Optional, float only: w_hh as rnn_pack_weights wrote it. The forward then
  // skips packing w_hh itself at every call (worth it when the weights do not
  // change between calls, as in inference). w_hh is still required. Packed
  // weights that do not fit this call (packed for another batch path, or, on
  // the GEMM path, another batch or thread count, or on the small-batch path in
  // the other float layout: see rnn_pack_weights) are ignored; rnn_forward
  // throws if they were packed for another cell or size, or in bfloat16 for a
  // training forward.
  const T* w_hh_packed = nullptr;
  // Optional, float only: w_ih as rnn_pack_input_weights wrote it. Where the
  // forward takes that form (rnn_packed_input_weights_size > 0) it makes the
  // input projection from it by its own product, faster than GEMMs over w_ih,
  // which sum in another order: results differ from those without it in the
  // last bits (they still do not depend on the thread count). Ignored where the
  // forward does not take it; throws if packed for another cell or size. w_ih is
  // still required.
  const T* w_ih_packed = nullptr;
  // Optional, float only: w_hr as rnn_pack_projection_weights wrote it, taken
  // where the forward takes that form (rnn_packed_projection_weights_size > 0:
  // an LSTM with a projection on the small-batch path), which then does not
  // pack w_hr itself; the same results either way. Ignored elsewhere (not
  // checked there); on that path throws if packed for another cell or size.
  // w_hr is still required.
  const T* w_hr_packed = nullptr;
  // The bfloat16 products (PackedPrecision::kBFloat16Products) on every path
  // and dtype, inference only: x and h rounded to bfloat16 (to nearest even;
  // a float64 value through float32 first) where the two products take them;
  // w_ih and w_hh must hold bfloat16 values already (the caller rounds them;
  // the nn modules keep rounded copies). The small-batch path takes them
  // packed so (w_hh_packed and w_ih_packed in that precision) or packs them
  // in the call; the other paths round x into a copy and each step's h rows
  // before their products. W_hr's product stays in T. Weights packed in that
  // precision imply it on the small-batch path.
  bool bf16_products = false;
};

// Parameter gradients, each with its weight's shape; ACCUMULATED (+=), or with
// overwrite WRITTEN (=): then the buffers need not be initialised, as for fresh
// gradients, which saves filling them with zeros first. A null pointer skips
// that gradient (b_* gradients are skipped anyway without bias).
template <class T>
struct RnnGrads {
  T* dw_ih = nullptr;  // [G*H, I]
  T* dw_hh = nullptr;  // [G*H, Hout]
  T* db_ih = nullptr;  // [G*H]
  T* db_hh = nullptr;  // [G*H]
  T* dw_hr = nullptr;  // [P, H]
  bool overwrite = false;
};

// Elements of T that rnn_forward needs. With training = true the workspace keeps,
// after the call, everything rnn_backward reads (see rnn.cpp for the layout), so it
// must be passed unchanged to rnn_backward. Unless dims.separate_scratch, it also
// holds a forward-only part that rnn_backward may use as scratch (so it must be
// writable memory; a second backward from the same workspace still works).
// Buffers are laid out from the workspace's first 64-byte boundary.
size_t rnn_forward_workspace_size(const RnnLayerDims& dims, bool training);
// Elements of T of the forward-only scratch when dims.separate_scratch (else 0).
size_t rnn_forward_scratch_size(const RnnLayerDims& dims);
// Elements of T that rnn_backward needs as scratch, besides the forward workspace.
size_t rnn_backward_workspace_size(const RnnLayerDims& dims);

// Precision of packed recurrent weights. kBFloat16 is an explicit, inference-only
// option: W_hh rounded to bfloat16 (8 significant bits) halves the bytes the
// small-batch forward reads per step, which is what bounds its speed; h, the
// products' sums and everything else stay float32. It costs accuracy: about
// 2^-9 relative per weight, a few 1e-3 relative on h over a sequence (see
// docs/PERFORMANCE.md for measured figures). Without AVX2 the kernels ignore
// packed weights and use w_hh in float32.
//
// kBFloat16Products goes one step further, for batches whose step is bound by
// the multiply-adds rather than by reading W_hh: the same packed W_hh, W_ih
// rounded too (packed so by rnn_pack_input_weights, or by the call), and x and
// h rounded to bfloat16 (to nearest even) where the gates' two products take
// them, so that each product of a weight and a value is exact in float32 and
// the sums stay float32 (in an order of the kernels'); h itself, the outputs,
// c, the biases, an LSTM's projection and the pointwise pass stay float32. On
// CPUs with AVX512_BF16 both products run on its dot instructions (vdpbf16ps:
// twice the multiply-adds of an FMA per instruction), which take subnormal
// operands and sums as zero; elsewhere by the float and widening products on
// the rounded values (same results but for the order of the sums). A W_hh
// packed so implies the mode on the small-batch path, even packed for another
// layout (the call then packs it again); without AVX2, as for kBFloat16, the
// kernels ignore the packed weights and compute in float32, unless
// RnnWeights::bf16_products asks for the mode, which every path and dtype
// then computes. Inference only.
enum class PackedPrecision { kFloat32, kBFloat16, kBFloat16Products };
// "float32", "bfloat16", "bfloat16 products".
const char* packed_precision_name(PackedPrecision precision);

// Floats that rnn_pack_weights writes for dims; 0 when there is no packed form
// (bfloat16 exists for the small-batch path only: a batch up to 8; without a
// projection up to 32 for an LSTM or a GRU with the AVX-512 kernels, or when
// batch * G * hidden_size^2 <= 2^20; with one, from 2 steps).
size_t rnn_packed_weights_size(const RnnLayerDims& dims,
                               PackedPrecision precision = PackedPrecision::kFloat32);
// Writes w_hh [G*H, Hout] re-laid out for the path dims take (internal layouts,
// tagged with what they depend on: for the small-batch path cell, sizes,
// precision and, for float, whether the batch's passes take the gates a few at
// a time, which with AVX2 they do for more than one row (then each gate's
// weights are packed contiguous); for the GEMM path (larger batches) also the
// batch and the thread count, as oneDNN's matmul chooses the layout).
// packed: [rnn_packed_weights_size(dims, precision)], 64-byte aligned is best.
// Runs on rnnkit::get_num_threads() threads; the result does not depend on it
// except through the GEMM path's layout.
void rnn_pack_weights(const RnnLayerDims& dims, const float* w_hh, float* packed,
                      PackedPrecision precision = PackedPrecision::kFloat32);
// Floats that rnn_pack_input_weights writes for dims; 0 where the forward on
// dims takes no packed W_ih. The small-batch forward (see
// rnn_packed_weights_size for the batches it takes) of the LSTM and the GRU
// takes it, with AVX2 or AVX-512; its layout depends on which (a packing made
// under the other is ignored, as rnn_packed_input_weights_fit tells).
//
// With kBFloat16Products (where rnn_packed_weights_size has that form): W_ih
// in bfloat16 for the bfloat16 products, which then take it (and only it: with
// W_hh packed so, a float32 W_ih packing throws, and without W_ih packed they
// pack it in each call). kBFloat16 has none (its forward takes the float32
// one).
size_t rnn_packed_input_weights_size(const RnnLayerDims& dims,
                                     PackedPrecision precision = PackedPrecision::kFloat32);
// Writes w_ih [G*H, I] in that layout into packed
// [rnn_packed_input_weights_size(dims, precision)], 64-byte aligned is best; on
// rnnkit::get_num_threads() threads (the result does not depend on it). Its
// layout depends on the cell and sizes only: one packing serves every batch
// and sequence length that takes packed W_ih.
void rnn_pack_input_weights(const RnnLayerDims& dims, const float* w_ih, float* packed,
                            PackedPrecision precision = PackedPrecision::kFloat32);
// Whether an rnn_forward on dims takes `packed` as its packed W_ih: written by
// rnn_pack_input_weights for this cell and these sizes in this precision, and
// taken by this forward (in float32, where its layout is this call's; the
// bfloat16 products' one layout wherever they run). False for anything else;
// never throws for a mismatch.
bool rnn_packed_input_weights_fit(const RnnLayerDims& dims, const float* packed,
                                  PackedPrecision precision = PackedPrecision::kFloat32);
// Floats that rnn_pack_projection_weights writes for dims; 0 where the forward
// on dims takes no packed W_hr: it does on the small-batch path of an LSTM
// with a projection (up to 8 rows, from 2 steps, AVX2 or AVX-512), in a layout
// that depends on the sizes only.
size_t rnn_packed_projection_weights_size(const RnnLayerDims& dims);
// Writes w_hr [P, H] in that layout into packed
// [rnn_packed_projection_weights_size(dims)], 64-byte aligned is best; on
// rnnkit::get_num_threads() threads (the result does not depend on it).
void rnn_pack_projection_weights(const RnnLayerDims& dims, const float* w_hr, float* packed);
// Whether an rnn_forward on dims takes `packed` as its packed W_hr (written by
// rnn_pack_projection_weights for this cell and these sizes, on a path that
// takes it). Never throws for a mismatch.
bool rnn_packed_projection_weights_fit(const RnnLayerDims& dims, const float* packed);
// Whether an inference rnn_forward on dims takes weights packed by
// rnn_pack_weights (float32) at all: false where the forward it takes has no
// use for them (the small-batch layout without AVX2 kernels, where the forward
// takes the GEMM path) or there is no packed form (rnn_packed_weights_size 0).
bool rnn_forward_takes_packed(const RnnLayerDims& dims);
// Whether an inference rnn_forward on dims, run with the current thread count
// (rnnkit::get_num_threads()), takes `packed` as it is rather than packing W_hh
// itself: packed was written by rnn_pack_weights for this cell and these sizes
// and for the path and layout this call takes (with, on the GEMM path, its
// batch and thread count; on the small-batch path the layout depends on the
// batch only through the gate-major choice). False for
// anything else, never throws for a mismatch (so a caller that keeps packed
// weights between calls can ask before passing them).
bool rnn_packed_weights_fit(const RnnLayerDims& dims, const float* packed);

// Forward pass of one direction. Threads: rnnkit::get_num_threads()
// (rnnkit/threading.h), so a call from inside an OpenMP parallel region runs on
// the calling thread alone; that is how the two directions of a bidirectional
// layer run concurrently on two cores. Float results are the same on every run
// with the same thread count, and inference and training forwards agree
// exactly (given the same weights: w_ih_packed changes the sums' order).
// Across thread counts, the small-batch and lanes products give
// the same bits; products that oneDNN's sgemm computes (the input and output
// projections, the per-step products on the GEMM path) may differ in the last
// bits, as oneDNN splits some shapes along K for some thread counts (seen on
// AVX2 between 1 and 3 threads).
//   x:   [rows, I] read, row stride ldx >= I
//   h0:  [N, Hout] read, or null for zeros
//   c0:  [N, H] read (LSTM only), or null for zeros
//   y:   [rows, Hout] written, row stride ldy >= Hout; columns beyond Hout are not
//        touched, so two directions may write into column halves of one buffer
//   h_n: [N, Hout] written, or null
//   c_n: [N, H] written (LSTM only), or null
//   workspace: [rnn_forward_workspace_size(dims, training)] read and written
// x, h0 and c0 may alias each other but none of the written buffers.
template <class T>
void rnn_forward(const RnnLayerDims& dims, const RnnWeights<T>& w, const T* x, int64_t ldx,
                 const T* h0, const T* c0, T* y, int64_t ldy, T* h_n, T* c_n, T* workspace,
                 bool training);
// The same with dims.separate_scratch: scratch [rnn_forward_scratch_size(dims)] is
// used during the call only (written; may be null when that size is 0, or when
// w.w_hh_packed fits the call: rnn_packed_weights_fit).
template <class T>
void rnn_forward(const RnnLayerDims& dims, const RnnWeights<T>& w, const T* x, int64_t ldx,
                 const T* h0, const T* c0, T* y, int64_t ldy, T* h_n, T* c_n, T* workspace,
                 bool training, T* scratch);

// Backward pass of one direction, given the inputs and outputs of a training
// forward with the same dims and weights.
//   x, h0, c0, y:  exactly as given to / produced by rnn_forward (read)
//   workspace:     the training forward's workspace (read)
//   dy:   [rows, Hout] read, row stride lddy; null = zeros
//   dh_n: [N, Hout] read, null = zeros; dc_n: [N, H] read (LSTM), null = zeros
//   dx:   [rows, I] row stride lddx >= I; dx = beta_dx * dx + dL/dx (beta_dx == 0
//         does not read dx); null = not needed
//   dh0:  [N, Hout] written, or null; dc0: [N, H] written (LSTM), or null. They are
//         the gradients w.r.t. the initial state also when h0/c0 were null (zeros).
//   dw:   parameter gradients, accumulated (+=)
//   backward_workspace: [rnn_backward_workspace_size(dims)] scratch
template <class T>
void rnn_backward(const RnnLayerDims& dims, const RnnWeights<T>& w, const T* x, int64_t ldx,
                  const T* h0, const T* c0, const T* y, int64_t ldy, const T* workspace,
                  const T* dy, int64_t lddy, const T* dh_n, const T* dc_n, T* dx,
                  int64_t lddx, T beta_dx, T* dh0, T* dc0, const RnnGrads<T>& dw,
                  T* backward_workspace);

}  // namespace rnnkit::kernels::cpu
