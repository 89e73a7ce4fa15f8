#pragma once
// Building blocks shared by the nn layer headers: the chainable-option macro
// and the holder macro for modules that have a default constructor.
#include <memory>

#include "rnnkit/nn/module.h"

// RNNKIT_NN_ARG(T, name): a field `name_` with a chainable setter
// `opts.name(value)` (returns the options) and a getter `opts.name()`, as
// libtorch's TORCH_ARG. Write the default after it: `RNNKIT_NN_ARG(bool, bias) = true;`
#define RNNKIT_NN_ARG(T, name)                       \
 public:                                             \
  auto name(const T& new_##name)->decltype(*this) {  \
    this->name##_ = new_##name;                      \
    return *this;                                    \
  }                                                  \
  const T& name() const noexcept { return name##_; } \
  T& name() noexcept { return name##_; }             \
                                                     \
 private:                                            \
  T name##_

