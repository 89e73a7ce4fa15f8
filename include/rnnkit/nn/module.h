#pragma once
// nn::Module: named parameters, buffers and submodules registered once (the
// registry is the one source of truth for names), train/eval, state_dict
// with PyTorch's dotted names, and printing like PyTorch's print(model).
//
// Modules are used through holders, as in libtorch: `nn::Linear fc(3, 4);`
// makes a LinearImpl on the heap; `fc->forward(x)` calls it; `*fc` is the
// module; copies of a holder share the module.
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rnnkit/state_dict.h"
#include "rnnkit/tensor.h"

namespace rnnkit::nn {

class Module : public std::enable_shared_from_this<Module> {
 public:
  // `name` is what printing shows ("LSTM", "RNNModel"); empty = derived from the C++ type.
  explicit Module(std::string name = "");
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& name() const;

  // ---- registration (call in the constructor; names must be unique) ----
  Tensor& register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  Tensor& register_buffer(const std::string& name, Tensor tensor, bool persistent = true);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    register_module_impl(name, module);
    return module;
  }
  // Holder overload: register_module("fc", nn::Linear(3, 4)) returns the holder.
  template <typename H, typename = decltype(std::declval<H>().ptr())>
  H register_module(const std::string& name, H holder) {
    register_module_impl(name, holder.ptr());
    return holder;
  }
  // Replaces a registered parameter, e.g. weight tying:
  //   decoder->weight = decoder->replace_parameter("weight", encoder->weight);
  Tensor& replace_parameter(const std::string& name, Tensor tensor);
  // Replaces a registered submodule (same name).
  void replace_module(const std::string& name, std::shared_ptr<Module> module);

  // ---- traversal ----
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  std::vector<std::shared_ptr<Module>> children() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  // This module and all descendants, depth first (PyTorch's modules()).
  std::vector<std::shared_ptr<Module>> modules();
  // Total number of parameter elements (sum of numel over parameters()).
  int64_t parameter_count() const;

  // ---- modes and gradients ----
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // set_to_none=true (PyTorch's default) drops the gradients; false zeroes them.
  void zero_grad(bool set_to_none = true);

  // ---- state ----
  StateDict state_dict() const;
  // Copies values into the registered tensors (shapes must match; dtype is
  // converted). strict: every key must match exactly, otherwise the error
  // lists the missing and unexpected keys as PyTorch does.
  void load_state_dict(const StateDict& state, bool strict = true);
  // Converts every parameter and buffer in place (handles stay valid).
  void to(Dtype dtype);

  // ---- printing ----
  // This module's options as PyTorch's extra_repr() prints them, e.g.
  // "in_features=3, out_features=4, bias=True" for Linear; empty by default.
  // Printing composes name() + "(" + extra_repr + children + ")".
  virtual std::string extra_repr() const { return ""; }

 protected:
  bool training_ = true;

 private:
  void register_module_impl(const std::string& name, std::shared_ptr<Module> module);
  void collect_named(const std::string& prefix, bool params, bool recurse,
                     std::vector<std::pair<std::string, Tensor>>* out) const;
  void check_new_name(const std::string& name, const char* what) const;

  mutable std::string name_;
  std::vector<std::pair<std::string, Tensor>> parameters_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::string> non_persistent_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// Prints the module tree like PyTorch's print(model).
std::ostream& operator<<(std::ostream& os, const Module& module);

// A shared handle to a module of type Impl.
template <typename Impl>
class ModuleHolder {
 public:
  using ContainedType = Impl;
  // Default-constructs the module when Impl allows it (nn::ReLU()), as libtorch does; otherwise empty.
  ModuleHolder() {
    if constexpr (std::is_default_constructible<Impl>::value) impl_ = std::make_shared<Impl>();
  }
  explicit ModuleHolder(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  template <typename First, typename... Rest,
            typename = std::enable_if_t<!std::is_same<std::decay_t<First>, ModuleHolder>::value &&
                                        !std::is_same<std::decay_t<First>, std::shared_ptr<Impl>>::value &&
                                        !std::is_same<std::decay_t<First>, std::nullptr_t>::value>>
  ModuleHolder(First&& first, Rest&&... rest)  // NOLINT: forwards to Impl's constructor
      : impl_(std::make_shared<Impl>(std::forward<First>(first), std::forward<Rest>(rest)...)) {}
  ModuleHolder(std::nullptr_t) {}  // NOLINT

  Impl* operator->() const { return get(); }
  Impl& operator*() const { return *get(); }
  Impl* get() const {
    if (!impl_) throw Error("ModuleHolder: accessing an empty module holder (construct it first)");
    return impl_.get();
  }
  const std::shared_ptr<Impl>& ptr() const { return impl_; }
  bool is_empty() const { return impl_ == nullptr; }
  explicit operator bool() const { return impl_ != nullptr; }
  template <typename Arg>
  decltype(auto) operator[](Arg&& arg) const {
    return (*get())[std::forward<Arg>(arg)];
  }
  template <typename... Args>
  decltype(auto) operator()(Args&&... args) const {
    return get()->forward(std::forward<Args>(args)...);
  }

 private:
  std::shared_ptr<Impl> impl_;
};

template <typename Impl>
std::ostream& operator<<(std::ostream& os, const ModuleHolder<Impl>& holder) {
  return os << *holder;
}

}  // namespace rnnkit::nn

// Declares `class Name : public ModuleHolder<NameImpl>`.
#define RNNKIT_MODULE(Name)                                       \
  class Name : public ::rnnkit::nn::ModuleHolder<Name##Impl> {    \
   public:                                                        \
    using ::rnnkit::nn::ModuleHolder<Name##Impl>::ModuleHolder;   \
    Name() = default;                                             \
  }
