#pragma once
// oneDNN's own RNN primitive on a bench Problem: vanilla_rnn (tanh/relu), lstm
// and lbr_gru (the GRU with PyTorch's linear-before-reset candidate), forward
// inference and forward training + backward, through dnnl.hpp. Weights are
// converted from PyTorch's layout once and reordered into the formats the
// primitives choose (format_tag::any) outside the timed calls, as a framework
// built on oneDNN would cache them.
#include <cstdint>
#include <memory>
#include <vector>

#include "problem.h"

namespace rnnkit::bench {

class OnednnRnn {
 public:
  explicit OnednnRnn(const Problem& p);
  ~OnednnRnn();
  void forward_inference();
  void train_step();  // train_forward then train_backward
  void train_forward();
  void train_backward();
  // dst_layer of the last forward inference, [T, N, H].
  std::vector<float> y() const;
  // diff_src_layer of the last training step, [T, N, H].
  std::vector<float> dx() const;
  // Peak resident-memory growth of one training step whose memory objects,
  // primitives and workspace are created inside it; -1 when /proc cannot tell.
  static int64_t peak_training_bytes(const Problem& p);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "2.6.3 (cpu runtime OMP, isa ...)".
std::string onednn_version_line();

}  // namespace rnnkit::bench
