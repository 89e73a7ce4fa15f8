#pragma once
// nn::Embedding: a lookup table of num_embeddings vectors, as torch.nn.Embedding.
#include <cstdint>
#include <optional>
#include <string>

#include "rnnkit/nn/module.h"
#include "rnnkit/nn/options.h"

namespace rnnkit::nn {

struct EmbeddingOptions {
  EmbeddingOptions(int64_t num_embeddings, int64_t embedding_dim)
      : num_embeddings_(num_embeddings), embedding_dim_(embedding_dim) {}
  /// size of the dictionary of embeddings
  RNNKIT_NN_ARG(int64_t, num_embeddings);
  /// size of each embedding vector
  RNNKIT_NN_ARG(int64_t, embedding_dim);
  /// this row is zero at initialisation and never receives a gradient; negative counts from the end
  RNNKIT_NN_ARG(std::optional<int64_t>, padding_idx) = std::nullopt;
  /// rows looked up with a larger norm are renormalised in place to this norm
  RNNKIT_NN_ARG(std::optional<double>, max_norm) = std::nullopt;
  /// the p of the p-norm used with max_norm
  RNNKIT_NN_ARG(double, norm_type) = 2.0;
  /// scale each row's gradient by 1 / (its frequency in the mini-batch)
  RNNKIT_NN_ARG(bool, scale_grad_by_freq) = false;
  /// PyTorch's sparse gradients; rnnkit accepts it and produces the same values as a dense gradient
  RNNKIT_NN_ARG(bool, sparse) = false;
  /// use this tensor (sharing its storage) as the weight instead of initialising one
  RNNKIT_NN_ARG(Tensor, _weight) = Tensor();
};

// Options of Embedding::from_pretrained.
struct EmbeddingFromPretrainedOptions {
  /// the weight gets no gradient (requires_grad false)
  RNNKIT_NN_ARG(bool, freeze) = true;
  RNNKIT_NN_ARG(std::optional<int64_t>, padding_idx) = std::nullopt;
  RNNKIT_NN_ARG(std::optional<double>, max_norm) = std::nullopt;
  RNNKIT_NN_ARG(double, norm_type) = 2.0;
  RNNKIT_NN_ARG(bool, scale_grad_by_freq) = false;
  RNNKIT_NN_ARG(bool, sparse) = false;
};

namespace functional {

struct EmbeddingFuncOptions {
  RNNKIT_NN_ARG(std::optional<int64_t>, padding_idx) = std::nullopt;
  RNNKIT_NN_ARG(std::optional<double>, max_norm) = std::nullopt;
  RNNKIT_NN_ARG(double, norm_type) = 2.0;
  RNNKIT_NN_ARG(bool, scale_grad_by_freq) = false;
  RNNKIT_NN_ARG(bool, sparse) = false;
};

// input: int64 indices of any shape; weight [num_embeddings, dim] -> [*input.shape, dim].
// With max_norm, the looked-up rows of weight are renormalised in place first.
Tensor embedding(const Tensor& input, const Tensor& weight, const EmbeddingFuncOptions& options = {});

}  // namespace functional

class EmbeddingImpl : public Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim)
      : EmbeddingImpl(EmbeddingOptions(num_embeddings, embedding_dim)) {}
  explicit EmbeddingImpl(const EmbeddingOptions& options, Generator* generator = nullptr);

  // weight ~ N(0, 1), then the padding_idx row is zeroed.
  void reset_parameters(Generator* generator = nullptr);
  Tensor forward(const Tensor& input);
  // "10, 3, padding_idx=0"
  std::string extra_repr() const override;

  EmbeddingOptions options;  // padding_idx normalised to [0, num_embeddings)
  Tensor weight;             // [num_embeddings, embedding_dim]
};

class Embedding : public ModuleHolder<EmbeddingImpl> {
 public:
  using ModuleHolder<EmbeddingImpl>::ModuleHolder;
  Embedding() = default;
  // An Embedding whose weight is `embeddings` (2-D, storage shared), frozen by default.
  static Embedding from_pretrained(const Tensor& embeddings, bool freeze = true,
                                   std::optional<int64_t> padding_idx = std::nullopt);
  static Embedding from_pretrained(const Tensor& embeddings, const EmbeddingFromPretrainedOptions& options);
};

}  // namespace rnnkit::nn
