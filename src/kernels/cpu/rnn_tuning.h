#pragma once
// Internal knobs of the CPU recurrent kernels, for tests and benchmarks only.
#include <cstdint>

namespace rnnkit::kernels::cpu::tuning {

// Caps the rows of dgates that rnn_backward keeps at once (see rnn.cpp,
// chunk_rows); 0 restores the automatic choice. Changes
// rnn_backward_workspace_size, so set it before sizing workspaces. Not thread-safe.
void set_backward_chunk_rows(int64_t rows);

}  // namespace rnnkit::kernels::cpu::tuning
