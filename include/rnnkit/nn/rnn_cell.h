#pragma once
// Single-step recurrent cells with PyTorch's semantics: nn::RNNCell, nn::LSTMCell,
// nn::GRUCell. One call is one step for a batch:
//
//   nn::LSTMCell cell(10, 20);
//   auto [h, c] = cell->forward(x);          // x [N, 10] or [10]; zeros as the state
//   nn::LSTMState state = cell->forward(x1);
//   state = cell->forward(x2, state);         // carries {h, c} on
//
// Shapes: input [N, input_size] or [input_size] (unbatched); h and c
// [N, hidden_size] or [hidden_size]. Parameters weight_ih [G*H, input_size],
// weight_hh [G*H, H], bias_ih [G*H], bias_hh [G*H] (G = 1, 4, 3), initialised
// from U(-1/sqrt(H), 1/sqrt(H)) as PyTorch. Each call is one autograd node (the
// recurrent-layer kernel with one step).
#include <cstdint>
#include <memory>
#include <string>

#include "rnnkit/generator.h"
#include "rnnkit/nn/module.h"
#include "rnnkit/tensor.h"

namespace rnnkit::nn {

// Hidden and cell state of an LSTM (cell): the initial state {h0, c0} given to
// a forward, and what LSTMCell returns.
struct LSTMState {
  Tensor h;
  Tensor c;
};

namespace detail {
class PackedWeightsCache;  // internal: weights packed between calls

template <class Derived>
class RNNCellOptionsBase {
 public:
  RNNCellOptionsBase(int64_t input_size, int64_t hidden_size) : input_size_(input_size), hidden_size_(hidden_size) {}

  /// The number of expected features in the input x.
  Derived& input_size(int64_t v) { input_size_ = v; return self(); }
  int64_t input_size() const { return input_size_; }
  /// The number of features in the hidden state h.
  Derived& hidden_size(int64_t v) { hidden_size_ = v; return self(); }
  int64_t hidden_size() const { return hidden_size_; }
  /// Whether the cell has the biases b_ih and b_hh. Default true.
  Derived& bias(bool v) { bias_ = v; return self(); }
  bool bias() const { return bias_; }
  /// Source of the initial weights; null = the default generator. Not owned.
  Derived& generator(Generator* v) { generator_ = v; return self(); }
  Generator* generator() const { return generator_; }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
  int64_t input_size_;
  int64_t hidden_size_;
  bool bias_ = true;
  Generator* generator_ = nullptr;
};

}  // namespace detail

class RNNCellOptions : public detail::RNNCellOptionsBase<RNNCellOptions> {
 public:
  using RNNCellOptionsBase::RNNCellOptionsBase;
  /// "tanh" or "relu". Default "tanh".
  RNNCellOptions& nonlinearity(std::string v) { nonlinearity_ = std::move(v); return *this; }
  const std::string& nonlinearity() const { return nonlinearity_; }

 private:
  std::string nonlinearity_ = "tanh";
};

class LSTMCellOptions : public detail::RNNCellOptionsBase<LSTMCellOptions> {
 public:
  using RNNCellOptionsBase::RNNCellOptionsBase;
};

class GRUCellOptions : public detail::RNNCellOptionsBase<GRUCellOptions> {
 public:
  using RNNCellOptionsBase::RNNCellOptionsBase;
};

// What the three cells share. Not used directly.
class RNNCellImplBase : public Module {
 public:
  void reset_parameters();
  std::string extra_repr() const override;
  int64_t input_size() const { return input_size_; }
  int64_t hidden_size() const { return hidden_size_; }
  bool bias() const { return bias_; }
  // W_hh rounded to bfloat16 in inference calls: see RNNImplBase::set_bf16_inference.
  void set_bf16_inference(bool on) { bf16_inference_ = on; }
  bool bf16_inference() const { return bf16_inference_; }
  // x, h, W_ih and W_hh rounded to bfloat16 in inference calls' products: see
  // RNNImplBase::set_bf16_products.
  void set_bf16_products(bool on) { bf16_products_ = on; }
  bool bf16_products() const { return bf16_products_; }
  // Internal (tests): the packed weights kept between calls.
  const detail::PackedWeightsCache& packed_weights_cache() const { return *packed_cache_; }

 protected:
  enum class Mode { RNN_TANH, RNN_RELU, LSTM, GRU };
  RNNCellImplBase(Mode mode, int64_t input_size, int64_t hidden_size, bool bias, Generator* generator,
                  const char* name);
  // One step; c only for the LSTM (undefined h/c = zeros). Returns {h', c'}.
  LSTMState step(const Tensor& input, const Tensor& h, const Tensor& c) const;

 private:
  Mode mode_;
  int64_t input_size_;
  int64_t hidden_size_;
  bool bias_;
  Generator* generator_;
  // Weights packed between calls; see RNNImplBase.
  std::shared_ptr<detail::PackedWeightsCache> packed_cache_;
  bool bf16_inference_ = false;
  bool bf16_products_ = false;
};

class RNNCellImpl : public RNNCellImplBase {
 public:
  RNNCellImpl(int64_t input_size, int64_t hidden_size) : RNNCellImpl(RNNCellOptions(input_size, hidden_size)) {}
  explicit RNNCellImpl(const RNNCellOptions& options);
  // h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu); hx undefined = zeros.
  Tensor forward(const Tensor& input, const Tensor& hx = Tensor()) const;
  const RNNCellOptions& options() const { return options_; }

 private:
  RNNCellOptions options_;
};

class LSTMCellImpl : public RNNCellImplBase {
 public:
  LSTMCellImpl(int64_t input_size, int64_t hidden_size)
      : LSTMCellImpl(LSTMCellOptions(input_size, hidden_size)) {}
  explicit LSTMCellImpl(const LSTMCellOptions& options);
  // Returns {h', c'}; hx = {h, c}, both given or both undefined (zeros).
  LSTMState forward(const Tensor& input, const LSTMState& hx = {}) const;
  const LSTMCellOptions& options() const { return options_; }

 private:
  LSTMCellOptions options_;
};

class GRUCellImpl : public RNNCellImplBase {
 public:
  GRUCellImpl(int64_t input_size, int64_t hidden_size) : GRUCellImpl(GRUCellOptions(input_size, hidden_size)) {}
  explicit GRUCellImpl(const GRUCellOptions& options);
  Tensor forward(const Tensor& input, const Tensor& hx = Tensor()) const;
  const GRUCellOptions& options() const { return options_; }

 private:
  GRUCellOptions options_;
};

RNNKIT_MODULE(RNNCell);
RNNKIT_MODULE(LSTMCell);
RNNKIT_MODULE(GRUCell);

}  // namespace rnnkit::nn
