#pragma once
// Packed variable-length batches, as torch.nn.utils.rnn: a PackedSequence holds
// the steps of every sequence of a batch in one time-major tensor, step t's
// rows being the sequences still running at t (longest first), so that the
// recurrent layers run each step on a shrinking batch instead of on padding.
//
//   lengths [3, 1, 2] (enforce_sorted=false), padded time-major input x [T=3, N=3, *]:
//   sorted order: sequence 0 (len 3), 2 (len 2), 1 (len 1)
//   data        = [x[0,0], x[0,2], x[0,1],  x[1,0], x[1,2],  x[2,0]]   rows of [6, *]
//   batch_sizes = [3, 2, 1]
//   sorted_indices = [0, 2, 1], unsorted_indices = [0, 2, 1] (its inverse)
//
// Every function here is differentiable in its tensor inputs (one autograd
// node each), so gradients flow from a layer's packed output back to the
// padded input.
#include <cstdint>
#include <vector>

#include "rnnkit/tensor.h"

namespace rnnkit::nn::utils::rnn {

struct PackedSequence {
  Tensor data;              // [sum(lengths), *] the steps, time-major, longest sequence first
  Tensor batch_sizes;       // [T] int64 on the CPU: sequences running at step t (non-increasing)
  Tensor sorted_indices;    // [N] int64, or undefined: packed row b of a step is sequence sorted_indices[b]
  Tensor unsorted_indices;  // [N] int64, or undefined: the inverse permutation of sorted_indices
};

// Packs a padded batch. input: [T, N, *] ([N, T, *] with batch_first); lengths:
// [N] int64 on the CPU (or a vector), each in [1, T]. With enforce_sorted the
// lengths must be non-increasing; otherwise the batch is sorted here (a stable
// sort, longest first) and the permutation kept in the result.
PackedSequence pack_padded_sequence(const Tensor& input, const Tensor& lengths, bool batch_first = false,
                                    bool enforce_sorted = true);
PackedSequence pack_padded_sequence(const Tensor& input, const std::vector<int64_t>& lengths,
                                    bool batch_first = false, bool enforce_sorted = true);

struct PaddedSequence {
  Tensor padded;   // [T', N, *] ([N, T', *] with batch_first), in the original batch order
  Tensor lengths;  // [N] int64, in the original batch order
};

// Inverse of pack_padded_sequence. T' = the longest length, or total_length when
// it is given (>= 0; it must then be at least the longest length). Padding
// positions hold padding_value.
PaddedSequence pad_packed_sequence(const PackedSequence& sequence, bool batch_first = false,
                                   double padding_value = 0.0, int64_t total_length = -1);

// Stacks sequences [L_i, *] (same * and dtype) into [max L_i, N, *] ([N, max L_i, *]
// with batch_first), padding with padding_value.
Tensor pad_sequence(const std::vector<Tensor>& sequences, bool batch_first = false, double padding_value = 0.0);

// pack_padded_sequence(pad_sequence(sequences), their lengths, false, enforce_sorted).
PackedSequence pack_sequence(const std::vector<Tensor>& sequences, bool enforce_sorted = true);

}  // namespace rnnkit::nn::utils::rnn
