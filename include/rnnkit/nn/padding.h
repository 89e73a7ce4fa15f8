#pragma once
// functional::pad, as torch.nn.functional.pad.
#include <string>
#include <vector>

#include "rnnkit/tensor.h"

namespace rnnkit::nn::functional {

// pad = {left_last, right_last, left_second_last, right_second_last, ...}:
// pairs from the last dimension backwards. mode "constant" (fill with value;
// negative amounts crop), "reflect", "replicate" or "circular". Differentiable.
// Causal 1-D convolution: pad(x, {kernel_size - 1, 0}) then conv1d.
Tensor pad(const Tensor& input, const std::vector<int64_t>& pad, const std::string& mode = "constant",
           double value = 0.0);

}  // namespace rnnkit::nn::functional
