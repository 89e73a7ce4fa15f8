// nn::RNNCell, nn::LSTMCell, nn::GRUCell: a cell is the recurrent-layer op
// with one layer, one direction and one step (batch_sizes = {N}), so a call is
// one autograd node and runs the same kernels as the layers.
#include "rnnkit/nn/rnn_cell.h"

#include <cmath>
#include <sstream>

#include "nn/rnn_function.h"
#include "rnnkit/autograd/node.h"

namespace rnnkit::nn {

namespace {

const char* cell_name(bool lstm, bool gru) { return lstm ? "LSTMCell" : gru ? "GRUCell" : "RNNCell"; }

}  // namespace

RNNCellImplBase::RNNCellImplBase(Mode mode, int64_t input_size, int64_t hidden_size, bool bias,
                                 Generator* generator, const char* name)
    : Module(name), mode_(mode), input_size_(input_size), hidden_size_(hidden_size), bias_(bias),
      generator_(generator), packed_cache_(std::make_shared<detail::PackedWeightsCache>()) {
  RNNKIT_CHECK(input_size > 0, name, ": input_size must be positive, got ", input_size);
  RNNKIT_CHECK(hidden_size > 0, name, ": hidden_size must be positive, got ", hidden_size);
  const int64_t gates = mode == Mode::LSTM ? 4 : mode == Mode::GRU ? 3 : 1;
  register_parameter("weight_ih", empty({gates * hidden_size, input_size}));
  register_parameter("weight_hh", empty({gates * hidden_size, hidden_size}));
  if (bias) {
    register_parameter("bias_ih", empty({gates * hidden_size}));
    register_parameter("bias_hh", empty({gates * hidden_size}));
  }
  reset_parameters();
}

void RNNCellImplBase::reset_parameters() {
  NoGradGuard guard;
  const double stdv = 1.0 / std::sqrt(static_cast<double>(hidden_size_));
  for (Tensor& p : parameters(false)) p.uniform_(-stdv, stdv, generator_);
}

std::string RNNCellImplBase::extra_repr() const {
  std::ostringstream os;
  os << input_size_ << ", " << hidden_size_;
  if (!bias_) os << ", bias=False";
  if (mode_ == Mode::RNN_RELU) os << ", nonlinearity=relu";
  return os.str();
}

LSTMState RNNCellImplBase::step(const Tensor& input, const Tensor& h, const Tensor& c) const {
  const bool lstm = mode_ == Mode::LSTM;
  const char* name = cell_name(lstm, mode_ == Mode::GRU);
  RNNKIT_CHECK(input.defined(), name, ".forward: input is an undefined tensor");
  RNNKIT_CHECK(input.dim() == 1 || input.dim() == 2, name, ": Expected input to be 1-D or 2-D but received ",
               input.dim(), "-D tensor");
  RNNKIT_CHECK(input.is_floating_point(), name, ".forward: input must be float32 or float64, got ",
               dtype_name(input.dtype()));
  const std::vector<Tensor> weights = parameters(false);
  RNNKIT_CHECK(input.dtype() == weights[0].dtype(), name, ".forward: input and parameter dtypes must match: input is ",
               dtype_name(input.dtype()), ", the parameters are ", dtype_name(weights[0].dtype()));
  RNNKIT_CHECK(input.size(-1) == input_size_, name, ".forward: input has inconsistent input_size: got ",
               input.size(-1), " expected ", input_size_);
  const bool batched = input.dim() == 2;
  const int64_t batch = batched ? input.size(0) : 1;
  RNNKIT_CHECK(batch > 0, name, ".forward: the batch is empty (input of shape ", shape_str(input.sizes()), ")");
  if (lstm)
    RNNKIT_CHECK(h.defined() == c.defined(), name,
                 ".forward: hx must hold both h and c, or neither (zeros); got h ", h.defined() ? "defined" : "undefined",
                 " and c ", c.defined() ? "defined" : "undefined");
  auto check_state = [&](const Tensor& t, int index) {
    if (!t.defined()) return;
    RNNKIT_CHECK(t.dim() == input.dim(), name, ".forward: For ", batched ? "batched 2-D" : "unbatched 1-D",
                 " input, hidden", index, " should also be ", input.dim(), "-D but got ", t.dim(), "-D tensor");
    RNNKIT_CHECK(t.dtype() == input.dtype(), name, ".forward: hidden", index, " must have the input's dtype ",
                 dtype_name(input.dtype()), ", got ", dtype_name(t.dtype()));
    if (batched)
      RNNKIT_CHECK(t.size(0) == batch, name, ".forward: Input batch size ", batch, " doesn't match hidden", index,
                   " batch size ", t.size(0));
    RNNKIT_CHECK(t.size(-1) == hidden_size_, name, ".forward: hidden", index, " has inconsistent hidden_size: got ",
                 t.size(-1), ", expected ", hidden_size_);
  };
  check_state(h, 0);
  if (lstm) check_state(c, 1);

  detail::RecurrentSpec spec;
  switch (mode_) {
    case Mode::RNN_TANH: spec.cell = kernels::cpu::CellType::RNN_TANH; break;
    case Mode::RNN_RELU: spec.cell = kernels::cpu::CellType::RNN_RELU; break;
    case Mode::LSTM: spec.cell = kernels::cpu::CellType::LSTM; break;
    case Mode::GRU: spec.cell = kernels::cpu::CellType::GRU; break;
  }
  spec.input_size = input_size_;
  spec.hidden_size = hidden_size_;
  spec.has_bias = bias_;
  spec.node_name = lstm ? "LSTMCellBackward" : mode_ == Mode::GRU ? "GRUCellBackward" : "RNNCellBackward";
  detail::RecurrentLayout layout;
  layout.batch_sizes = {batch};
  const Shape state_shape = batched ? Shape{batch, hidden_size_} : Shape{hidden_size_};
  layout.output_shape = state_shape;
  layout.hidden_shape = state_shape;
  layout.cell_shape = state_shape;
  layout.return_h_n = false;  // the output row is h'
  spec.packed_cache = packed_cache_.get();
  spec.pack_input_weights = !is_training();
  spec.bf16_inference = bf16_inference_;
  spec.bf16_products = bf16_products_;
  detail::RecurrentResult r = detail::recurrent_forward(spec, layout, input, h, lstm ? c : Tensor(), weights);
  return {r.output, r.c_n};
}

RNNCellImpl::RNNCellImpl(const RNNCellOptions& options)
    : RNNCellImplBase(
          [&] {
            RNNKIT_CHECK(options.nonlinearity() == "tanh" || options.nonlinearity() == "relu",
                         "Unknown nonlinearity: ", options.nonlinearity(), " (RNNCell takes \"tanh\" or \"relu\")");
            return options.nonlinearity() == "relu" ? Mode::RNN_RELU : Mode::RNN_TANH;
          }(),
          options.input_size(), options.hidden_size(), options.bias(), options.generator(), "RNNCell"),
      options_(options) {}

Tensor RNNCellImpl::forward(const Tensor& input, const Tensor& hx) const { return step(input, hx, Tensor()).h; }

LSTMCellImpl::LSTMCellImpl(const LSTMCellOptions& options)
    : RNNCellImplBase(Mode::LSTM, options.input_size(), options.hidden_size(), options.bias(), options.generator(),
                      "LSTMCell"),
      options_(options) {}

LSTMState LSTMCellImpl::forward(const Tensor& input, const LSTMState& hx) const { return step(input, hx.h, hx.c); }

GRUCellImpl::GRUCellImpl(const GRUCellOptions& options)
    : RNNCellImplBase(Mode::GRU, options.input_size(), options.hidden_size(), options.bias(), options.generator(),
                      "GRUCell"),
      options_(options) {}

Tensor GRUCellImpl::forward(const Tensor& input, const Tensor& hx) const { return step(input, hx, Tensor()).h; }

}  // namespace rnnkit::nn
