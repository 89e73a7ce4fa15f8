#pragma once
// Internal knobs of the CPU recurrent kernels, for tests and benchmarks only.
#include <cstdint>

#include "kernels/cpu/rnn.h"

namespace rnnkit::kernels::cpu::tuning {

// Caps the rows of dgates that rnn_backward keeps at once (see rnn.cpp,
// chunk_rows); 0 restores the automatic choice. Changes
// rnn_backward_workspace_size, so set it before sizing workspaces. Not thread-safe.
void set_backward_chunk_rows(int64_t rows);

// Lowers (or raises) the W_hh size, in floats, from which batches that fill a
// vector take the rows-in-lanes product (rnn.cpp, lanes_path), so that tests
// reach that path with small layers, also with 8-lane vectors, where the default
// rule never takes it; a negative value restores the default.
// Changes the workspace sizes, so set it before sizing them. Not thread-safe.
void set_lanes_min_weights(int64_t floats);

// Which forward path dims take on the active instruction set: "small-batch",
// "lanes" (rows-in-lanes products) or "gemm" (oneDNN per-step products).
const char* forward_path(const RnnLayerDims& dims);

}  // namespace rnnkit::kernels::cpu::tuning
