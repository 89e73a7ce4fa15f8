#include "rnnkit/nn/embedding.h"

#include "util/python_repr.h"
#include "rnnkit/autograd/node.h"
#include "rnnkit/nn/init.h"

namespace rnnkit::nn {

EmbeddingImpl::EmbeddingImpl(const EmbeddingOptions& options_, Generator* generator) : options(options_) {
  const int64_t num = options.num_embeddings(), dim = options.embedding_dim();
  RNNKIT_CHECK(num >= 0 && dim >= 0, "Embedding: num_embeddings and embedding_dim must be non-negative, got ", num,
               " and ", dim);
  if (options.padding_idx()) {
    int64_t& p = *options.padding_idx();
    RNNKIT_CHECK(p < num && p >= -num, "Padding_idx must be within num_embeddings");
    if (p < 0) p += num;
  }
  const Tensor& given = options._weight();
  if (given.defined()) {
    RNNKIT_CHECK(given.sizes() == Shape({num, dim}), "Shape of weight does not match num_embeddings and embedding_dim");
    // Shares the given storage, like nn.Parameter(_weight).
    weight = register_parameter("weight", given.detach());
    options._weight() = Tensor();
  } else {
    weight = register_parameter("weight", empty({num, dim}));
    reset_parameters(generator);
  }
}

void EmbeddingImpl::reset_parameters(Generator* generator) {
  init::normal_(weight, 0.0, 1.0, generator);
  if (options.padding_idx()) {
    NoGradGuard guard;
    weight.select(0, *options.padding_idx()).fill_(0.0);
  }
}

Tensor EmbeddingImpl::forward(const Tensor& input) {
  return functional::embedding(input, weight,
                               functional::EmbeddingFuncOptions()
                                   .padding_idx(options.padding_idx())
                                   .max_norm(options.max_norm())
                                   .norm_type(options.norm_type())
                                   .scale_grad_by_freq(options.scale_grad_by_freq())
                                   .sparse(options.sparse()));
}

std::string EmbeddingImpl::extra_repr() const {
  std::string s = std::to_string(options.num_embeddings()) + ", " + std::to_string(options.embedding_dim());
  if (options.padding_idx()) s += ", padding_idx=" + std::to_string(*options.padding_idx());
  if (options.max_norm()) s += ", max_norm=" + util::py_float(*options.max_norm());
  if (options.norm_type() != 2.0) s += ", norm_type=" + util::py_float(options.norm_type());
  if (options.scale_grad_by_freq()) s += ", scale_grad_by_freq=True";
  if (options.sparse()) s += ", sparse=True";
  return s;
}

Embedding Embedding::from_pretrained(const Tensor& embeddings, bool freeze, std::optional<int64_t> padding_idx) {
  return from_pretrained(embeddings, EmbeddingFromPretrainedOptions().freeze(freeze).padding_idx(padding_idx));
}

Embedding Embedding::from_pretrained(const Tensor& embeddings, const EmbeddingFromPretrainedOptions& options) {
  RNNKIT_CHECK(embeddings.defined() && embeddings.dim() == 2, "Embeddings parameter is expected to be 2-dimensional");
  Embedding e(EmbeddingOptions(embeddings.size(0), embeddings.size(1))
                  ._weight(embeddings)
                  .padding_idx(options.padding_idx())
                  .max_norm(options.max_norm())
                  .norm_type(options.norm_type())
                  .scale_grad_by_freq(options.scale_grad_by_freq())
                  .sparse(options.sparse()));
  e->weight.requires_grad_(!options.freeze());
  return e;
}

}  // namespace rnnkit::nn
