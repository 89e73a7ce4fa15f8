#pragma once
// Internal knobs of the CPU recurrent kernels, for tests and benchmarks only.
#include <cstdint>

#include "kernels/cpu/rnn.h"

namespace rnnkit::kernels::cpu::tuning {

// Caps the rows of dgates that rnn_backward keeps at once (see rnn.cpp,
// chunk_rows); 0 restores the automatic choice. Changes
// rnn_backward_workspace_size, so set it before sizing workspaces. Not thread-safe.
void set_backward_chunk_rows(int64_t rows);

// Lowers (or raises) the W_hh size, in floats, from which batches of 14-16 rows
// take the lanes product where the size decides (rnn.cpp, lanes_path: the AVX2
// kernels, the projected LSTM), so that tests reach that path with small
// layers; a negative value restores the default.
// Changes the workspace sizes, so set it before sizing them. Not thread-safe.
void set_lanes_min_weights(int64_t floats);

// The default of that size: 1.5x the L2 cache of the machine's cores, in floats.
int64_t default_lanes_min_weights();

// Sets the W_hh size, in bytes, from which the small-batch backward reads W_hh
// in prefetched row chunks (rnn.cpp, stream_w_hh_in_backward); the results are
// the same bits either way. A negative value restores the default (8 MiB).
// Not thread-safe.
void set_streamed_grad_min_bytes(int64_t bytes);

// Sets the size, in bytes, of a thread's slice of W_hh from which the
// small-batch forward lets threads take the last blocks of each other's slices
// (rnn.cpp, split_min_bytes); the results are the same bits either way. A
// negative value restores the default (4 MiB). Not thread-safe.
void set_split_min_bytes(int64_t bytes);

// Sets how far ahead, in bytes, the small-batch forward's product requests its
// packed weights, and the small-batch backward's plain walk its rows of W_hh
// (rnn_simd_impl.h, recurrent_prefetch_bytes and recurrent_grad_ahead); 0
// turns the requests off; the results are the same bits either way. A
// negative value restores the defaults (by the size of a thread's slice). Not
// thread-safe.
void set_small_batch_prefetch(int64_t bytes);

// Whether the GEMM path's per-step products go through the dense stage where
// oneDNN would not take the strided gates rows in place (rnn.cpp,
// step_stage_size; default true); false restores packed_gemm's own copies.
// The results are the same bits either way. Not thread-safe.
void set_stage_step_products(bool stage);

// Whether the small-batch forward may take its input projection by the
// kernels' packed product (rnn.cpp, packed_projection_path; default true);
// false: by GEMMs, which sum in another order. Changes
// rnn_packed_input_weights_size. For A/B measurements. Not thread-safe.
void set_packed_projection(bool on);
// Turns the small-batch forward of LSTMs with a projection (rnn.cpp,
// small_batch_proj_path) on (the default) or off (the GEMM path, as before it
// existed), for A/B measurements. Not thread-safe.
void set_small_batch_proj(bool on);

// Whether the bfloat16 products (PackedPrecision::kBFloat16Products) may use
// the AVX512_BF16 dot products where the CPU has them (the default); false:
// the widening product on the rounded h, as on CPUs without them (the same
// results but for the order of the sums), so that tests reach both. Not
// thread-safe.
void set_bf16_dot_hardware(bool on);

// Whether a forward on dims given no packed W_ih packs it itself for the
// packed product (rnn.cpp, self_packed_projection), on the active instruction
// set: its results are then the same bits as with W_ih packed by the caller.
bool self_packs_projection(const RnnLayerDims& dims);

// Which forward path dims take on the active instruction set: "small-batch",
// "lanes" (lanes_gemm per-step products) or "gemm" (oneDNN per-step products).
const char* forward_path(const RnnLayerDims& dims);
// Which path the backward of dims takes on the active instruction set:
// "small-batch" (the persistent reverse walk) or "gemm" (per-step products:
// oneDNN's, or lanes_gemm ones where the forward takes those).
const char* backward_path(const RnnLayerDims& dims);

}  // namespace rnnkit::kernels::cpu::tuning
