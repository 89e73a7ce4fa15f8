#pragma once
// nn::Conv1d, as torch.nn.Conv1d: input [N, C_in, L] (or unbatched [C_in, L])
// -> [N, C_out, L_out], L_out = (L + 2*padding - dilation*(kernel_size-1) - 1) / stride + 1.
// A causal convolution is F::pad(x, {kernel_size - 1, 0}) followed by conv1d
// with padding 0 (or the module with padding 0 on a left-padded input).
#include <cstdint>
#include <string>

#include "rnnkit/nn/module.h"
#include "rnnkit/nn/options.h"

namespace rnnkit::nn {

// A convolution's padding: an amount on both sides, or "valid" (0) or
// "same" (output length = input length; stride must be 1).
class ConvPadding {
 public:
  ConvPadding(int amount) : amount_(amount) {}                       // NOLINT: implicit, .padding(1)
  ConvPadding(int64_t amount) : amount_(amount) {}                   // NOLINT
  ConvPadding(const char* mode) : ConvPadding(std::string(mode)) {}  // NOLINT: .padding("same")
  ConvPadding(const std::string& mode);                              // NOLINT
  bool is_same() const { return same_; }
  // The symmetric amount (0 for "valid"); meaningless for "same".
  int64_t amount() const { return amount_; }
  // PyTorch's printed form: "(1,)", "same" or "valid".
  std::string repr() const;
  bool operator==(const ConvPadding& o) const { return same_ == o.same_ && valid_ == o.valid_ && amount_ == o.amount_; }

 private:
  int64_t amount_ = 0;
  bool same_ = false, valid_ = false;
};

struct Conv1dOptions {
  Conv1dOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  /// channels of the input
  RNNKIT_NN_ARG(int64_t, in_channels);
  /// channels produced by the convolution
  RNNKIT_NN_ARG(int64_t, out_channels);
  /// width of the kernel
  RNNKIT_NN_ARG(int64_t, kernel_size);
  /// step between output positions
  RNNKIT_NN_ARG(int64_t, stride) = 1;
  /// padding added to both sides, or "same" / "valid"
  RNNKIT_NN_ARG(ConvPadding, padding) = 0;
  /// spacing between kernel taps
  RNNKIT_NN_ARG(int64_t, dilation) = 1;
  /// blocked connections: in and out channels split into this many groups
  RNNKIT_NN_ARG(int64_t, groups) = 1;
  /// learn an additive bias
  RNNKIT_NN_ARG(bool, bias) = true;
  /// "zeros", "reflect", "replicate" or "circular"
  RNNKIT_NN_ARG(std::string, padding_mode) = "zeros";
};

namespace functional {
// input [N, C_in, L] or [C_in, L]; weight [C_out, C_in/groups, K]; bias [C_out] or undefined.
// Zero padding. One im2col + one GEMM per group for the whole batch, forward and backward.
Tensor conv1d(const Tensor& input, const Tensor& weight, const Tensor& bias = Tensor(), int64_t stride = 1,
              const ConvPadding& padding = 0, int64_t dilation = 1, int64_t groups = 1);
}  // namespace functional

class Conv1dImpl : public Module {
 public:
  Conv1dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : Conv1dImpl(Conv1dOptions(in_channels, out_channels, kernel_size)) {}
  explicit Conv1dImpl(const Conv1dOptions& options, Generator* generator = nullptr);

  // weight ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
  // fan_in = in_channels / groups * kernel_size; bias ~ the same bound.
  void reset_parameters(Generator* generator = nullptr);
  Tensor forward(const Tensor& input);
  // "16, 33, kernel_size=(3,), stride=(2,), padding=(1,)"
  std::string extra_repr() const override;

  Conv1dOptions options;
  Tensor weight;  // [out_channels, in_channels / groups, kernel_size]
  Tensor bias;    // [out_channels] or undefined
};
RNNKIT_MODULE(Conv1d);

}  // namespace rnnkit::nn
