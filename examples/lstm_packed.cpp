// A bidirectional two-layer LSTM over a packed batch of variable-length
// sequences: pack, run, unpack, take each sequence's final states, backprop.
#include <iostream>
#include <vector>

#include "rnnkit/nn/rnn.h"
#include "rnnkit/rnnkit.h"

int main() {
  namespace nn = rnnkit::nn;
  namespace rnn = rnnkit::nn::utils::rnn;
  using rnnkit::Tensor;
  rnnkit::manual_seed(0);

  nn::LSTM lstm(nn::LSTMOptions(/*input_size=*/8, /*hidden_size=*/16).num_layers(2).batch_first(true).bidirectional(true));
  std::cout << *lstm << "\n";  // LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True)

  // Three sequences of lengths 5, 2 and 4, padded to [N=3, T=5, 8]; any order.
  Tensor x = rnnkit::randn({3, 5, 8}).requires_grad_();
  const std::vector<int64_t> lengths = {5, 2, 4};
  rnn::PackedSequence packed = rnn::pack_padded_sequence(x, lengths, /*batch_first=*/true, /*enforce_sorted=*/false);

  // One call runs both layers and both directions over the real steps only.
  auto [out, h_n, c_n] = lstm->forward(packed);
  auto [padded, out_lengths] = rnn::pad_packed_sequence(out, /*batch_first=*/true);
  std::cout << "output " << rnnkit::shape_str(padded.sizes())          // [3, 5, 32]
            << ", h_n " << rnnkit::shape_str(h_n.sizes())              // [4, 3, 16]
            << ", c_n " << rnnkit::shape_str(c_n.sizes()) << "\n";     // [4, 3, 16]

  // h_n is in the original batch order and holds each sequence's state at its
  // own last step (forward direction) and at its first step (reverse direction).
  Tensor features = rnnkit::cat({h_n[2], h_n[3]}, 1);  // last layer, both directions: [3, 32]
  Tensor loss = rnnkit::mean(rnnkit::mul(features, features));
  loss.backward();
  std::cout << "loss " << loss.item() << ", |d loss / d weight_ih_l0| = "
            << lstm->named_parameters()[0].second.grad().norm().item()
            << ", padding steps get no gradient: " << x.grad()[1][3].abs().max().item() << "\n";
  return 0;
}
