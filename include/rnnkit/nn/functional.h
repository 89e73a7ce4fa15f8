#pragma once
// rnnkit::nn::functional (alias rnnkit::nn::F): every functional form of the
// nn layer. Each is declared beside its module in the concept's header; this
// header gathers them.
#include "rnnkit/nn/activation.h"
#include "rnnkit/nn/conv.h"
#include "rnnkit/nn/dropout.h"
#include "rnnkit/nn/embedding.h"
#include "rnnkit/nn/linear.h"
#include "rnnkit/nn/loss.h"
#include "rnnkit/nn/normalization.h"
#include "rnnkit/nn/padding.h"

namespace rnnkit::nn {
namespace F = functional;
}  // namespace rnnkit::nn
