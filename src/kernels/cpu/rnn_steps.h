#pragma once
// The walk over the steps of one direction of a (possibly packed) sequence, shared
// by the generic time loop (rnn.cpp) and the small-batch SIMD path
// (rnn_simd_impl.h). See rnn.h for the packed layout.
#include <cstdint>

#include "kernels/cpu/rnn.h"

namespace rnnkit::kernels::cpu::detail {

// One step of the walk, in the forward pass's processing order.
struct Step {
  int64_t n;            // active rows, batch_sizes[t]
  int64_t off;          // first packed row of step t
  int64_t n_cont;       // rows [0, n_cont) continue from the previous processed step,
                        // rows [n_cont, n) start from h0/c0
  int64_t off_prev;     // first packed row of the previous processed step
  int64_t n_next_cont;  // rows [0, n_next_cont) go on to the next processed step,
                        // rows [n_next_cont, n) end here: their state is h_n/c_n
};

// Calls fn(Step) for every step; in the forward pass's processing order when
// forward_order, in the opposite order otherwise. rows = packed_rows(d).
template <class Fn>
void for_each_step(const RnnLayerDims& d, int64_t rows, bool forward_order, Fn&& fn) {
  const int64_t T = d.steps;
  const int64_t* bs = d.batch_sizes;
  const bool ascending = forward_order != d.reverse;
  int64_t t = ascending ? 0 : T - 1;
  int64_t off = ascending ? 0 : rows - bs[T - 1];
  for (int64_t k = 0; k < T; ++k) {
    Step s;
    s.n = bs[t];
    s.off = off;
    if (!d.reverse) {
      s.n_cont = t > 0 ? s.n : 0;
      s.off_prev = t > 0 ? off - bs[t - 1] : 0;
      s.n_next_cont = t + 1 < T ? bs[t + 1] : 0;
    } else {
      s.n_cont = t + 1 < T ? bs[t + 1] : 0;
      s.off_prev = off + s.n;
      s.n_next_cont = t > 0 ? s.n : 0;
    }
    fn(s);
    if (ascending) {
      off += bs[t];
      ++t;
    } else if (t > 0) {
      off -= bs[t - 1];
      --t;
    }
  }
}

}  // namespace rnnkit::kernels::cpu::detail
