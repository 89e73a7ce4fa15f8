// nn::RNN, nn::LSTM, nn::GRU: option checks, parameter registration in
// PyTorch's order, the user-facing shape checks (with PyTorch's messages), and
// the description of the batch's memory for the fused op in rnn_function.h.
#include "rnnkit/nn/rnn.h"

#include <cmath>
#include <sstream>

#include "util/python_repr.h"
#include "nn/rnn_function.h"
#include "rnnkit/autograd/node.h"

namespace rnnkit::nn {

namespace {

using utils::rnn::PackedSequence;

// Checks that an index tensor is a permutation of 0..n-1.
void check_permutation(const Tensor& perm, int64_t n, const char* what, const char* op) {
  RNNKIT_CHECK(perm.dtype() == kInt64 && perm.dim() == 1 && perm.size(0) == n, op, ": PackedSequence.", what,
               " must be a 1-D int64 tensor of size batch_sizes[0] = ", n, ", got ", dtype_name(perm.dtype()), " ",
               shape_str(perm.sizes()));
  std::vector<char> seen(static_cast<size_t>(n), 0);
  const Tensor c = perm.contiguous();
  const int64_t* p = c.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    RNNKIT_CHECK(p[i] >= 0 && p[i] < n && !seen[static_cast<size_t>(p[i])], op, ": PackedSequence.", what,
                 " must be a permutation of 0..", n - 1, ", got the value ", p[i], " at position ", i);
    seen[static_cast<size_t>(p[i])] = 1;
  }
}

Tensor invert_permutation(const Tensor& perm) {
  const Tensor c = perm.contiguous();
  const int64_t n = c.numel();
  std::vector<int64_t> inv(static_cast<size_t>(n));
  const int64_t* p = c.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) inv[static_cast<size_t>(p[i])] = i;
  return from_vector(inv, {n});
}

}  // namespace

// ------------------------------------------------------------------ RNNImplBase

const char* RNNImplBase::layer_name() const {
  switch (mode_) {
    case Mode::RNN_TANH:
    case Mode::RNN_RELU: return "RNN";
    case Mode::LSTM: return "LSTM";
    case Mode::GRU: return "GRU";
  }
  return "RNN";
}

void RNNImplBase::build() {
  const char* name = layer_name();
  packed_cache_ = std::make_shared<detail::PackedWeightsCache>();
  RNNKIT_CHECK(mode_ == Mode::LSTM || proj_size_ == 0,
               "proj_size argument is only supported for LSTM, not RNN or GRU (", name, " got proj_size=", proj_size_,
               ")");
  RNNKIT_CHECK(input_size_ > 0, name, ": input_size must be positive, got ", input_size_);
  RNNKIT_CHECK(hidden_size_ > 0, name, ": hidden_size must be positive, got ", hidden_size_);
  RNNKIT_CHECK(num_layers_ > 0, name, ": num_layers must be positive, got ", num_layers_);
  RNNKIT_CHECK(dropout_ >= 0.0 && dropout_ <= 1.0,
               "dropout should be a number in range [0, 1] representing the probability of an element being "
               "zeroed (",
               name, " got dropout=", util::py_float(dropout_), ")");
  // dropout > 0 with num_layers == 1 is allowed (PyTorch only warns): there is
  // no layer but the last, so it has no effect.
  RNNKIT_CHECK(proj_size_ >= 0, "proj_size should be a positive integer or zero to disable projections (", name,
               " got proj_size=", proj_size_, ")");
  RNNKIT_CHECK(proj_size_ < hidden_size_, "proj_size has to be smaller than hidden_size (", name,
               " got proj_size=", proj_size_, ", hidden_size=", hidden_size_, ")");

  const int64_t gates = mode_ == Mode::LSTM ? 4 : mode_ == Mode::GRU ? 3 : 1;
  const int64_t gate_size = gates * hidden_size_;
  const int64_t real_hidden = proj_size_ > 0 ? proj_size_ : hidden_size_;
  const int64_t directions = bidirectional_ ? 2 : 1;
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    for (int64_t direction = 0; direction < directions; ++direction) {
      const int64_t layer_input = layer == 0 ? input_size_ : real_hidden * directions;
      const std::string suffix = std::to_string(layer) + (direction == 1 ? "_reverse" : "");
      register_parameter("weight_ih_l" + suffix, empty({gate_size, layer_input}));
      register_parameter("weight_hh_l" + suffix, empty({gate_size, real_hidden}));
      if (bias_) {
        register_parameter("bias_ih_l" + suffix, empty({gate_size}));
        register_parameter("bias_hh_l" + suffix, empty({gate_size}));
      }
      if (proj_size_ > 0) register_parameter("weight_hr_l" + suffix, empty({proj_size_, hidden_size_}));
    }
  }
  reset_parameters();
}

void RNNImplBase::reset_parameters() {
  NoGradGuard guard;
  const double stdv = 1.0 / std::sqrt(static_cast<double>(hidden_size_));
  for (Tensor& p : parameters(false)) p.uniform_(-stdv, stdv, generator_);
}

std::vector<std::vector<Tensor>> RNNImplBase::all_weights() const {
  const std::vector<Tensor> flat = parameters(false);
  const size_t per = 2 + (bias_ ? 2 : 0) + (proj_size_ > 0 ? 1 : 0);
  std::vector<std::vector<Tensor>> out;
  for (size_t i = 0; i < flat.size(); i += per) out.emplace_back(flat.begin() + i, flat.begin() + i + per);
  return out;
}

std::string RNNImplBase::extra_repr() const {
  std::ostringstream os;
  os << input_size_ << ", " << hidden_size_;
  if (proj_size_ != 0) os << ", proj_size=" << proj_size_;
  if (num_layers_ != 1) os << ", num_layers=" << num_layers_;
  if (!bias_) os << ", bias=False";
  if (batch_first_) os << ", batch_first=True";
  if (dropout_ != 0.0) os << ", dropout=" << util::py_float(dropout_);
  if (bidirectional_) os << ", bidirectional=True";
  return os.str();
}

namespace {

// The per-call description shared by the tensor and packed forwards.
struct CallChecks {
  const char* name;
  bool lstm;
  int64_t expected_layers;  // D * num_layers
  int64_t hidden_out;
  int64_t hidden_size;
  Dtype dtype;
};

void check_state_dtype(const CallChecks& c, const Tensor& t, const char* which) {
  RNNKIT_CHECK(t.dtype() == c.dtype, c.name, ".forward: ", which, " must have the input's dtype ",
               dtype_name(c.dtype), ", got ", dtype_name(t.dtype()));
}

// Checks h0 (and c0) against the expected [D*num_layers, N, *] shapes; the
// shapes are those after unsqueezing an unbatched state, as PyTorch reports them.
void check_hidden(const CallChecks& c, const Tensor& h0, const Tensor& c0, int64_t batch, bool unbatched) {
  const Shape expect_h{c.expected_layers, batch, c.hidden_out};
  const Shape expect_c{c.expected_layers, batch, c.hidden_size};
  auto as_3d = [&](const Tensor& t) {
    Shape s = t.sizes();
    if (unbatched) s.insert(s.begin() + 1, 1);
    return s;
  };
  if (h0.defined()) {
    check_state_dtype(c, h0, c.lstm ? "h0" : "hx");
    RNNKIT_CHECK(as_3d(h0) == expect_h, c.name, ".forward: Expected hidden", c.lstm ? "[0]" : "", " size ",
                 util::py_tuple(expect_h), ", got ", shape_str(as_3d(h0)));
  }
  if (c.lstm && c0.defined()) {
    check_state_dtype(c, c0, "c0");
    RNNKIT_CHECK(as_3d(c0) == expect_c, c.name, ".forward: Expected hidden[1] size ", util::py_tuple(expect_c), ", got ",
                 shape_str(as_3d(c0)));
  }
}

}  // namespace

RNNOutput RNNImplBase::forward_tensor(const Tensor& input, const Tensor& h0, const Tensor& c0) const {
  const char* name = layer_name();
  const bool lstm = mode_ == Mode::LSTM;
  RNNKIT_CHECK(input.defined(), name, ".forward: input is an undefined tensor");
  RNNKIT_CHECK(input.is_floating_point(), name, ".forward: input must be float32 or float64, got ",
               dtype_name(input.dtype()));
  const std::vector<Tensor> weights = parameters(false);
  RNNKIT_CHECK(input.dtype() == weights[0].dtype(), name, ".forward: input and parameter dtypes must match: input is ",
               dtype_name(input.dtype()), ", the parameters are ", dtype_name(weights[0].dtype()));
  RNNKIT_CHECK(input.dim() == 2 || input.dim() == 3, name, ".forward: input must have 3 dimensions (2 when unbatched), got ",
               input.dim(), " (shape ", shape_str(input.sizes()), ")");
  RNNKIT_CHECK(input.size(-1) == input_size_, name, ".forward: input.size(-1) must be equal to input_size. Expected ",
               input_size_, ", got ", input.size(-1));
  const bool batched = input.dim() == 3;
  if (lstm) {
    RNNKIT_CHECK(h0.defined() == c0.defined(), name,
                 ".forward: hx must hold both h0 and c0, or neither (zeros); got h0 ",
                 h0.defined() ? "defined" : "undefined", " and c0 ", c0.defined() ? "defined" : "undefined");
    if (h0.defined()) {
      const int64_t want = batched ? 3 : 2;
      RNNKIT_CHECK(h0.dim() == want && c0.dim() == want, name, ".forward: For ",
                   batched ? "batched 3-D" : "unbatched 2-D", " input, hx and cx should also be ", want,
                   "-D but got (", h0.dim(), "-D, ", c0.dim(), "-D) tensors");
    }
  } else if (h0.defined()) {
    RNNKIT_CHECK(h0.dim() == (batched ? 3 : 2), name, ".forward: For ", batched ? "batched 3-D" : "unbatched 2-D",
                 " input, hx should also be ", batched ? 3 : 2, "-D but got ", h0.dim(), "-D tensor");
  }
  const bool batch_first = batched && batch_first_;
  const int64_t steps = batched ? input.size(batch_first ? 1 : 0) : input.size(0);
  const int64_t batch = batched ? input.size(batch_first ? 0 : 1) : 1;
  const int64_t D = bidirectional_ ? 2 : 1;
  const int64_t hidden_out = proj_size_ > 0 ? proj_size_ : hidden_size_;
  const CallChecks checks{name, lstm, D * num_layers_, hidden_out, hidden_size_, input.dtype()};
  check_hidden(checks, h0, c0, batch, !batched);
  RNNKIT_CHECK(steps > 0, name, ".forward: Expected sequence length to be larger than 0 in RNN, got input of shape ",
               shape_str(input.sizes()));
  RNNKIT_CHECK(batch > 0, name, ".forward: the batch is empty (input of shape ", shape_str(input.sizes()), ")");

  const detail::RecurrentSpec spec = recurrent_spec();

  detail::RecurrentLayout layout;
  layout.batch_sizes.assign(static_cast<size_t>(steps), batch);
  layout.batch_first = batch_first;
  if (batched) {
    layout.output_shape = batch_first ? Shape{batch, steps, D * hidden_out} : Shape{steps, batch, D * hidden_out};
    layout.hidden_shape = {D * num_layers_, batch, hidden_out};
    layout.cell_shape = {D * num_layers_, batch, hidden_size_};
  } else {
    layout.output_shape = {steps, D * hidden_out};
    layout.hidden_shape = {D * num_layers_, hidden_out};
    layout.cell_shape = {D * num_layers_, hidden_size_};
  }
  detail::RecurrentResult r = detail::recurrent_forward(spec, layout, input, h0, lstm ? c0 : Tensor(), weights);
  return {r.output, r.h_n, r.c_n};
}

PackedRNNOutput RNNImplBase::forward_packed(const PackedSequence& input, const Tensor& h0, const Tensor& c0) const {
  const char* name = layer_name();
  const bool lstm = mode_ == Mode::LSTM;
  const Tensor& data = input.data;
  const Tensor& batch_sizes = input.batch_sizes;
  RNNKIT_CHECK(data.defined() && batch_sizes.defined(), name,
               ".forward: the PackedSequence has an undefined data or batch_sizes tensor");
  RNNKIT_CHECK(data.is_floating_point(), name, ".forward: input must be float32 or float64, got ",
               dtype_name(data.dtype()));
  const std::vector<Tensor> weights = parameters(false);
  RNNKIT_CHECK(data.dtype() == weights[0].dtype(), name, ".forward: input and parameter dtypes must match: input is ",
               dtype_name(data.dtype()), ", the parameters are ", dtype_name(weights[0].dtype()));
  RNNKIT_CHECK(data.dim() == 2, name, ".forward: input must have 2 dimensions, got ", data.dim(),
               " (PackedSequence.data of shape ", shape_str(data.sizes()), ")");
  RNNKIT_CHECK(data.size(-1) == input_size_, name, ".forward: input.size(-1) must be equal to input_size. Expected ",
               input_size_, ", got ", data.size(-1));
  RNNKIT_CHECK(batch_sizes.dtype() == kInt64 && batch_sizes.dim() == 1 && batch_sizes.numel() > 0, name,
               ".forward: PackedSequence.batch_sizes must be a non-empty 1-D int64 tensor, got ",
               dtype_name(batch_sizes.dtype()), " ", shape_str(batch_sizes.sizes()));
  detail::RecurrentLayout layout;
  layout.batch_sizes = batch_sizes.to_vector<int64_t>();
  int64_t rows = 0;
  for (size_t t = 0; t < layout.batch_sizes.size(); ++t) {
    const int64_t b = layout.batch_sizes[t];
    RNNKIT_CHECK(b > 0 && (t == 0 || b <= layout.batch_sizes[t - 1]), name,
                 ".forward: PackedSequence.batch_sizes must be positive and non-increasing, got ", b, " at step ", t,
                 t > 0 ? " after " : "", t > 0 ? std::to_string(layout.batch_sizes[t - 1]) : std::string());
    rows += b;
  }
  RNNKIT_CHECK(rows == data.size(0), name, ".forward: PackedSequence.data has ", data.size(0),
               " rows but sum(batch_sizes) is ", rows);
  const int64_t batch = layout.batch_sizes[0];
  if (input.sorted_indices.defined()) {
    check_permutation(input.sorted_indices, batch, "sorted_indices", name);
    layout.sorted_indices = input.sorted_indices.contiguous();
    if (input.unsorted_indices.defined()) {
      check_permutation(input.unsorted_indices, batch, "unsorted_indices", name);
      layout.unsorted_indices = input.unsorted_indices.contiguous();
    } else {
      layout.unsorted_indices = invert_permutation(layout.sorted_indices);
    }
  } else if (input.unsorted_indices.defined()) {
    check_permutation(input.unsorted_indices, batch, "unsorted_indices", name);
    layout.unsorted_indices = input.unsorted_indices.contiguous();
    layout.sorted_indices = invert_permutation(layout.unsorted_indices);
  }
  if (lstm)
    RNNKIT_CHECK(h0.defined() == c0.defined(), name,
                 ".forward: hx must hold both h0 and c0, or neither (zeros); got h0 ",
                 h0.defined() ? "defined" : "undefined", " and c0 ", c0.defined() ? "defined" : "undefined");
  const int64_t D = bidirectional_ ? 2 : 1;
  const int64_t hidden_out = proj_size_ > 0 ? proj_size_ : hidden_size_;
  const CallChecks checks{name, lstm, D * num_layers_, hidden_out, hidden_size_, data.dtype()};
  check_hidden(checks, h0, c0, batch, false);

  const detail::RecurrentSpec spec = recurrent_spec();
  layout.output_shape = {rows, D * hidden_out};
  layout.hidden_shape = {D * num_layers_, batch, hidden_out};
  layout.cell_shape = {D * num_layers_, batch, hidden_size_};
  detail::RecurrentResult r = detail::recurrent_forward(spec, layout, data, h0, lstm ? c0 : Tensor(), weights);
  PackedRNNOutput out;
  out.output = PackedSequence{r.output, batch_sizes, input.sorted_indices, input.unsorted_indices};
  if (layout.sorted_indices.defined() && !out.output.sorted_indices.defined())
    out.output.sorted_indices = layout.sorted_indices;
  if (layout.unsorted_indices.defined() && !out.output.unsorted_indices.defined())
    out.output.unsorted_indices = layout.unsorted_indices;
  out.h_n = r.h_n;
  out.c_n = r.c_n;
  return out;
}

detail::RecurrentSpec RNNImplBase::recurrent_spec() const {
  detail::RecurrentSpec spec;
  switch (mode_) {
    case Mode::RNN_TANH: spec.cell = kernels::cpu::CellType::RNN_TANH; break;
    case Mode::RNN_RELU: spec.cell = kernels::cpu::CellType::RNN_RELU; break;
    case Mode::LSTM: spec.cell = kernels::cpu::CellType::LSTM; break;
    case Mode::GRU: spec.cell = kernels::cpu::CellType::GRU; break;
  }
  spec.input_size = input_size_;
  spec.hidden_size = hidden_size_;
  spec.proj_size = proj_size_;
  spec.num_layers = num_layers_;
  spec.bidirectional = bidirectional_;
  spec.has_bias = bias_;
  spec.dropout = dropout_;
  spec.dropout_active = is_training() && dropout_ > 0.0 && num_layers_ > 1;
  spec.generator = generator_;
  spec.packed_cache = packed_cache_.get();
  spec.pack_input_weights = !is_training();
  spec.bf16_inference = bf16_inference_;
  spec.bf16_products = bf16_products_;
  spec.node_name = mode_ == Mode::LSTM ? "LSTMBackward" : mode_ == Mode::GRU ? "GRUBackward" : "RNNBackward";
  return spec;
}

// ------------------------------------------------------------------ the layers

RNNImplBase::Mode RNNImplBase::elman_mode(const std::string& nonlinearity) {
  RNNKIT_CHECK(nonlinearity == "tanh" || nonlinearity == "relu", "Unknown nonlinearity '", nonlinearity,
               "' (RNN takes \"tanh\" or \"relu\")");
  return nonlinearity == "relu" ? Mode::RNN_RELU : Mode::RNN_TANH;
}

RNNImpl::RNNImpl(const RNNOptions& options)
    : RNNImplBase(elman_mode(options.nonlinearity()), options, "RNN"), options_(options) {}

RNNOutput RNNImpl::forward(const Tensor& input, const Tensor& h0) const { return forward_tensor(input, h0, Tensor()); }

PackedRNNOutput RNNImpl::forward(const PackedSequence& input, const Tensor& h0) const {
  return forward_packed(input, h0, Tensor());
}

LSTMImpl::LSTMImpl(const LSTMOptions& options) : RNNImplBase(Mode::LSTM, options, "LSTM"), options_(options) {}

RNNOutput LSTMImpl::forward(const Tensor& input, const LSTMState& hx) const {
  return forward_tensor(input, hx.h, hx.c);
}

PackedRNNOutput LSTMImpl::forward(const PackedSequence& input, const LSTMState& hx) const {
  return forward_packed(input, hx.h, hx.c);
}

GRUImpl::GRUImpl(const GRUOptions& options) : RNNImplBase(Mode::GRU, options, "GRU"), options_(options) {}

RNNOutput GRUImpl::forward(const Tensor& input, const Tensor& h0) const { return forward_tensor(input, h0, Tensor()); }

PackedRNNOutput GRUImpl::forward(const PackedSequence& input, const Tensor& h0) const {
  return forward_packed(input, h0, Tensor());
}

}  // namespace rnnkit::nn
