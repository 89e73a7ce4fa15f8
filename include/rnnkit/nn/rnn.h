#pragma once
// Multi-layer recurrent layers with PyTorch's semantics: nn::RNN (Elman, tanh or
// relu), nn::LSTM (with optional projection) and nn::GRU.
//
//   nn::LSTM lstm(nn::LSTMOptions(10, 20).num_layers(2).bidirectional(true));
//   auto [out, h_n, c_n] = lstm->forward(x);            // x [L, N, 10]
//   auto [out2, h2, c2] = lstm->forward(x, {h_n, c_n});  // with an initial state
//   auto packed = lstm->forward(nn::utils::rnn::pack_padded_sequence(x, lengths));
//
// Shapes (D = 2 if bidirectional else 1, H_out = proj_size or hidden_size):
//   input  [L, N, H_in] ([N, L, H_in] with batch_first), [L, H_in] unbatched, or a PackedSequence
//   h0/h_n [D*num_layers, N, H_out] ([D*num_layers, H_out] unbatched)
//   c0/c_n [D*num_layers, N, hidden_size] (LSTM)
//   output [L, N, D*H_out] ([N, L, D*H_out] with batch_first), [L, D*H_out] unbatched,
//          or a PackedSequence with data [sum(lengths), D*H_out]
//
// Parameters are named, shaped, ordered and initialised as PyTorch's (weight_ih_l0,
// weight_hh_l0, bias_ih_l0, bias_hh_l0, weight_hr_l0, then the _reverse ones, then
// layer 1, ...), so a state_dict moves between the two unchanged.
//
// A whole forward (all layers, directions and steps) is one autograd node whose
// backward is a fused backward-through-time; see docs/RECURRENT.md.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rnnkit/generator.h"
#include "rnnkit/nn/module.h"
#include "rnnkit/nn/rnn_cell.h"
#include "rnnkit/nn/utils/rnn.h"
#include "rnnkit/tensor.h"

namespace rnnkit::nn {

namespace detail {
struct RecurrentSpec;       // internal: what the fused recurrent op needs to know
class PackedWeightsCache;  // internal: weights packed between calls

// Options shared by RNN, LSTM and GRU (PyTorch's RNNBase arguments). Setters
// return the derived options so that chains keep their type.
template <class Derived>
class RNNOptionsBase {
 public:
  RNNOptionsBase(int64_t input_size, int64_t hidden_size) : input_size_(input_size), hidden_size_(hidden_size) {}

  /// The number of expected features in the input x.
  Derived& input_size(int64_t v) { input_size_ = v; return self(); }
  int64_t input_size() const { return input_size_; }
  /// The number of features in the hidden state h (and the cell state c of an LSTM).
  Derived& hidden_size(int64_t v) { hidden_size_ = v; return self(); }
  int64_t hidden_size() const { return hidden_size_; }
  /// Number of stacked recurrent layers; layer k > 0 reads layer k-1's output. Default 1.
  Derived& num_layers(int64_t v) { num_layers_ = v; return self(); }
  int64_t num_layers() const { return num_layers_; }
  /// Whether the layers have the biases b_ih and b_hh. Default true.
  Derived& bias(bool v) { bias_ = v; return self(); }
  bool bias() const { return bias_; }
  /// Input and output as [N, L, *] instead of [L, N, *] (not h/c, and not unbatched input). Default false.
  Derived& batch_first(bool v) { batch_first_ = v; return self(); }
  bool batch_first() const { return batch_first_; }
  /// Probability of zeroing each element of every layer's output but the last's, in training mode. Default 0.
  Derived& dropout(double v) { dropout_ = v; return self(); }
  double dropout() const { return dropout_; }
  /// Run a second direction from the end of each sequence; outputs are concatenated. Default false.
  Derived& bidirectional(bool v) { bidirectional_ = v; return self(); }
  bool bidirectional() const { return bidirectional_; }
  /// LSTM only: size of the projection W_hr applied to h (0 = none, else < hidden_size). Default 0.
  Derived& proj_size(int64_t v) { proj_size_ = v; return self(); }
  int64_t proj_size() const { return proj_size_; }
  /// Source of the initial weights and of the dropout masks; null = the default
  /// generator. Not owned: it must outlive the module.
  Derived& generator(Generator* v) { generator_ = v; return self(); }
  Generator* generator() const { return generator_; }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
  int64_t input_size_;
  int64_t hidden_size_;
  int64_t num_layers_ = 1;
  bool bias_ = true;
  bool batch_first_ = false;
  double dropout_ = 0.0;
  bool bidirectional_ = false;
  int64_t proj_size_ = 0;
  Generator* generator_ = nullptr;
};

}  // namespace detail

class RNNOptions : public detail::RNNOptionsBase<RNNOptions> {
 public:
  using RNNOptionsBase::RNNOptionsBase;
  /// "tanh" or "relu". Default "tanh".
  RNNOptions& nonlinearity(std::string v) { nonlinearity_ = std::move(v); return *this; }
  const std::string& nonlinearity() const { return nonlinearity_; }

 private:
  std::string nonlinearity_ = "tanh";
};

class LSTMOptions : public detail::RNNOptionsBase<LSTMOptions> {
 public:
  using RNNOptionsBase::RNNOptionsBase;
};

class GRUOptions : public detail::RNNOptionsBase<GRUOptions> {
 public:
  using RNNOptionsBase::RNNOptionsBase;
};

// Result of a forward on a padded (or unbatched) tensor. c_n is undefined for
// RNN and GRU. h_n/c_n are in the input's batch order.
struct RNNOutput {
  Tensor output;
  Tensor h_n;
  Tensor c_n;
};

// Result of a forward on a PackedSequence: output shares the input's
// batch_sizes and indices; h_n/c_n are in the original (unsorted) batch order.
struct PackedRNNOutput {
  utils::rnn::PackedSequence output;
  Tensor h_n;
  Tensor c_n;
};

// What RNN, LSTM and GRU share: options, parameters, the forward driver and
// printing. Not used directly.
class RNNImplBase : public Module {
 public:
  // Re-draws every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)).
  void reset_parameters();
  // The parameters in PyTorch's _flat_weights order (same as parameters()).
  std::vector<Tensor> flat_weights() const { return parameters(false); }
  // PyTorch's all_weights: one list per layer and direction.
  std::vector<std::vector<Tensor>> all_weights() const;
  std::string extra_repr() const override;

  int64_t input_size() const { return input_size_; }
  int64_t hidden_size() const { return hidden_size_; }
  int64_t num_layers() const { return num_layers_; }
  bool bias() const { return bias_; }
  bool batch_first() const { return batch_first_; }
  double dropout() const { return dropout_; }
  bool bidirectional() const { return bidirectional_; }
  int64_t proj_size() const { return proj_size_; }
  // rnnkit's own switch, not PyTorch's: inference forwards (no graph
  // recorded: under NoGradGuard, or with inputs and parameters that need no
  // gradient; a forward that records a graph ignores it) of float32 and
  // float64 layers take every W_hh (weight_hh_l*) rounded to bfloat16, to
  // nearest even, as PyTorch's Tensor.bfloat16() rounds; W_ih, the biases,
  // W_hr, the states and all arithmetic stay in the layer's dtype. The results
  // are those of the same layer with weight_hh_l* replaced by their bfloat16
  // roundings, to float rounding, on any path and CPU. Where the kernels'
  // small-batch path runs on AVX2 or AVX-512 (a float32 layer, batch up to 8,
  // or without a projection up to 32 for an LSTM or a GRU on AVX-512; with a
  // projection from 2 steps), they read W_hh as bfloat16: half the bytes per
  // step, which is what bounds their speed at small batch (docs/PERFORMANCE.md).
  // Accuracy: about 2^-9 relative per weight; measured on the outputs over a
  // sequence, a few 1e-4 absolute for LSTM and GRU, about 2e-3 for the Elman
  // cells (docs/RECURRENT.md). The parameters are untouched (a state_dict
  // saves float values); the module keeps a rounded copy of each W_hh, and its
  // bfloat16 packing, while the weights stay unchanged. Default off.
  void set_bf16_inference(bool on) { bf16_inference_ = on; }
  bool bf16_inference() const { return bf16_inference_; }
  // rnnkit's own switch, a step further than set_bf16_inference: inference
  // forwards of float32 and float64 layers take the gates' two products on
  // values rounded to bfloat16 (to nearest even, as Tensor.bfloat16() rounds):
  // every weight_ih_l* and weight_hh_l*, each layer's input x_t and the state
  // h_{t-1} entering each step (h0 included), as it is rounded where the
  // product takes it. Each product of a weight and a value is then exact and
  // the sums are in the layer's dtype; the biases, c, the projection (W_hr and
  // its input), the pointwise math and every output stay in the layer's dtype.
  // On an AVX-512 CPU with AVX512_BF16 (AMD Zen 4 and later, Intel Cooper
  // Lake, Sapphire Rapids and later) the two products run on its dot
  // instructions, twice the multiply-adds per instruction of float32: the
  // small-batch path's own kernels, oneDNN's bfloat16 matmul at larger batches
  // (docs/RECURRENT.md); on other CPUs the same rounded values go through the
  // float products (no faster). Each step's result is that of the equations
  // on the rounded values to the rounding of the sums; over a sequence, where
  // two runs (another CPU or batch path) differ in the last bits of an h
  // value that lies at a bfloat16 rounding boundary, it rounds apart, so they
  // can differ by up to a bfloat16 step of that value, fading over the
  // following steps. Accuracy against float32: a few 1e-3 absolute on LSTM
  // and GRU outputs, up to about 1e-2 for the Elman cells (measured in
  // docs/RECURRENT.md). Training forwards ignore
  // it; parameters stay untouched (the module keeps rounded copies of W_ih
  // and W_hh while they stay unchanged). Default off; on, it supersedes
  // set_bf16_inference.
  void set_bf16_products(bool on) { bf16_products_ = on; }
  bool bf16_products() const { return bf16_products_; }
  // Internal (tests): the packed weights kept between calls.
  const detail::PackedWeightsCache& packed_weights_cache() const { return *packed_cache_; }

 protected:
  enum class Mode { RNN_TANH, RNN_RELU, LSTM, GRU };
  // RNN_TANH or RNN_RELU for RNNOptions::nonlinearity; throws for anything else.
  static Mode elman_mode(const std::string& nonlinearity);
  template <class Options>
  RNNImplBase(Mode mode, const Options& o, const char* name)
      : Module(name), mode_(mode), input_size_(o.input_size()), hidden_size_(o.hidden_size()),
        num_layers_(o.num_layers()), bias_(o.bias()), batch_first_(o.batch_first()), dropout_(o.dropout()),
        bidirectional_(o.bidirectional()), proj_size_(o.proj_size()), generator_(o.generator()) {
    build();
  }

  // The forward shared by the three layers; c0 only for the LSTM. An undefined
  // h0 (and c0) means zeros.
  RNNOutput forward_tensor(const Tensor& input, const Tensor& h0, const Tensor& c0) const;
  PackedRNNOutput forward_packed(const utils::rnn::PackedSequence& input, const Tensor& h0,
                                 const Tensor& c0) const;

 private:
  void build();  // validates the options, registers and initialises the parameters
  detail::RecurrentSpec recurrent_spec() const;
  const char* layer_name() const;

  Mode mode_;
  int64_t input_size_;
  int64_t hidden_size_;
  int64_t num_layers_;
  bool bias_;
  bool batch_first_;
  double dropout_;
  bool bidirectional_;
  int64_t proj_size_;
  Generator* generator_;
  // W_hh packed for the kernels (and, in eval mode, W_ih where the forward
  // takes it packed), kept between inference calls (no graph
  // recorded) and one-step training calls while the weights' storage version
  // stays the same: every data_ptr taken advances it (rnnkit::Storage), so
  // every change the library makes is seen; a write through a data_ptr kept
  // from before a call is not (take a fresh one). See rnn_function.h and
  // docs/RECURRENT.md.
  std::shared_ptr<detail::PackedWeightsCache> packed_cache_;
  bool bf16_inference_ = false;
  bool bf16_products_ = false;
};

// Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu).
class RNNImpl : public RNNImplBase {
 public:
  RNNImpl(int64_t input_size, int64_t hidden_size) : RNNImpl(RNNOptions(input_size, hidden_size)) {}
  explicit RNNImpl(const RNNOptions& options);
  RNNOutput forward(const Tensor& input, const Tensor& h0 = Tensor()) const;
  PackedRNNOutput forward(const utils::rnn::PackedSequence& input, const Tensor& h0 = Tensor()) const;
  const RNNOptions& options() const { return options_; }

 private:
  RNNOptions options_;
};

// LSTM, gates i, f, g, o; with proj_size > 0, h_t = W_hr (o_t * tanh(c_t)).
class LSTMImpl : public RNNImplBase {
 public:
  LSTMImpl(int64_t input_size, int64_t hidden_size) : LSTMImpl(LSTMOptions(input_size, hidden_size)) {}
  explicit LSTMImpl(const LSTMOptions& options);
  // hx: {h0, c0}, both given or both undefined (zeros).
  RNNOutput forward(const Tensor& input, const LSTMState& hx = {}) const;
  PackedRNNOutput forward(const utils::rnn::PackedSequence& input, const LSTMState& hx = {}) const;
  const LSTMOptions& options() const { return options_; }

 private:
  LSTMOptions options_;
};

// GRU, gates r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
class GRUImpl : public RNNImplBase {
 public:
  GRUImpl(int64_t input_size, int64_t hidden_size) : GRUImpl(GRUOptions(input_size, hidden_size)) {}
  explicit GRUImpl(const GRUOptions& options);
  RNNOutput forward(const Tensor& input, const Tensor& h0 = Tensor()) const;
  PackedRNNOutput forward(const utils::rnn::PackedSequence& input, const Tensor& h0 = Tensor()) const;
  const GRUOptions& options() const { return options_; }

 private:
  GRUOptions options_;
};

RNNKIT_MODULE(RNN);
RNNKIT_MODULE(LSTM);
RNNKIT_MODULE(GRU);

}  // namespace rnnkit::nn
