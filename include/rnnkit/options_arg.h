#pragma once
// RNNKIT_ARG(T, name): declares one option of an options struct, as libtorch's
// TORCH_ARG: a private field `name_` with a chainable setter `opts.name(value)`
// (returns the options) and getters `opts.name()`. Write the default after it:
// `RNNKIT_ARG(bool, bias) = true;`. The nn layers and the optimizers spell it
// RNNKIT_NN_ARG and RNNKIT_OPTIM_ARG.
#define RNNKIT_ARG(T, name)                          \
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
