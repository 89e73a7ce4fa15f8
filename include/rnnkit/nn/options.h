#pragma once
// What the nn layer headers share: Module and the chainable-option macro.
#include <memory>

#include "rnnkit/nn/module.h"
#include "rnnkit/options_arg.h"

// RNNKIT_NN_ARG(T, name): a field `name_` with a chainable setter
// `opts.name(value)` (returns the options) and a getter `opts.name()`, as
// libtorch's TORCH_ARG. Write the default after it: `RNNKIT_NN_ARG(bool, bias) = true;`
#define RNNKIT_NN_ARG(T, name) RNNKIT_ARG(T, name)

