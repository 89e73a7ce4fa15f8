#pragma once
// Containers: Sequential (chains Tensor -> Tensor forwards), ModuleList and
// ModuleDict (register their members so parameters, modes, state_dict and
// printing see them), and Functional (a Tensor -> Tensor function as a module).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rnnkit/nn/module.h"
#include "rnnkit/nn/options.h"

namespace rnnkit::nn {

namespace detail {

template <typename M, typename = void>
struct has_tensor_forward : std::false_type {};
template <typename M>
struct has_tensor_forward<M, std::enable_if_t<std::is_convertible<
                                 decltype(std::declval<M&>().forward(std::declval<const Tensor&>())), Tensor>::value>>
    : std::true_type {};

template <typename H, typename = void>
struct is_holder : std::false_type {};
template <typename H>
struct is_holder<H, std::void_t<typename std::decay_t<H>::ContainedType>> : std::true_type {};

// The module of a holder or a shared_ptr, with a Tensor -> Tensor forward
// bound to it when the module has one.
struct Entry {
  std::shared_ptr<Module> module;
  std::function<Tensor(const Tensor&)> forward;
};
template <typename M>
Entry make_entry(std::shared_ptr<M> module) {
  static_assert(std::is_base_of<Module, M>::value, "containers hold nn::Module subclasses");
  Entry e;
  RNNKIT_CHECK(module != nullptr, "container: cannot add an empty module holder");
  e.module = module;
  if constexpr (has_tensor_forward<M>::value)
    e.forward = [module](const Tensor& x) { return Tensor(module->forward(x)); };
  return e;
}
template <typename H>
Entry make_entry(const H& holder, std::enable_if_t<is_holder<H>::value, int> = 0) {
  return make_entry(holder.ptr());
}

// Python-style index: negative counts from the end; throws when out of range.
size_t wrap_index(int64_t index, size_t size);

}  // namespace detail

// A module wrapping a function, so a lambda can sit in a Sequential.
class FunctionalImpl : public Module {
 public:
  explicit FunctionalImpl(std::function<Tensor(const Tensor&)> function) : function_(std::move(function)) {}
  Tensor forward(const Tensor& input) { return function_(input); }

 private:
  std::function<Tensor(const Tensor&)> function_;
};
RNNKIT_MODULE(Functional);

// Modules applied in order; children are named "0", "1", ... unless named
// explicitly. forward needs every member to have a Tensor -> Tensor forward.
class SequentialImpl : public Module {
 public:
  SequentialImpl() = default;
  template <typename First, typename... Rest,
            typename = std::enable_if_t<!std::is_same<std::decay_t<First>, SequentialImpl>::value>>
  explicit SequentialImpl(First&& first, Rest&&... rest) {
    push_back(std::forward<First>(first));
    (push_back(std::forward<Rest>(rest)), ...);
  }

  // Appends a module (holder or shared_ptr) named by its position.
  template <typename M>
  void push_back(M&& module) {
    add(std::to_string(entries_.size()), detail::make_entry(std::forward<M>(module)));
  }
  template <typename M>
  void push_back(const std::string& name, M&& module) {
    add(name, detail::make_entry(std::forward<M>(module)));
  }
  // Inserts before `index` (-size <= index <= size), renaming the positional children
  // after it ("0", "1", ...: like PyTorch, insert assumes positional names).
  template <typename M>
  void insert(int64_t index, M&& module) {
    insert_entry(index, detail::make_entry(std::forward<M>(module)));
  }
  void extend(const SequentialImpl& other);

  // Feeds input through every module in order.
  Tensor forward(const Tensor& input);

  size_t size() const { return entries_.size(); }
  bool is_empty() const { return entries_.empty(); }
  // The module at a position (negative counts from the end).
  std::shared_ptr<Module> operator[](int64_t index) const { return ptr(index); }
  std::shared_ptr<Module> ptr(int64_t index) const;
  template <typename T>
  std::shared_ptr<T> ptr(int64_t index) const {
    auto p = std::dynamic_pointer_cast<T>(ptr(index));
    RNNKIT_CHECK(p != nullptr, "Sequential: the module at index ", index, " (", ptr(index)->name(),
                 ") is not of the requested type");
    return p;
  }
  template <typename T>
  T& at(int64_t index) const {
    return *ptr<T>(index);
  }
  std::vector<std::shared_ptr<Module>>::const_iterator begin() const { return modules_.begin(); }
  std::vector<std::shared_ptr<Module>>::const_iterator end() const { return modules_.end(); }

 private:
  void add(const std::string& name, detail::Entry entry);
  void insert_entry(int64_t index, detail::Entry entry);
  std::vector<detail::Entry> entries_;
  std::vector<std::shared_ptr<Module>> modules_;  // entries_[i].module, for iteration
};

class Sequential : public ModuleHolder<SequentialImpl> {
 public:
  using ModuleHolder<SequentialImpl>::ModuleHolder;
  Sequential() : ModuleHolder<SequentialImpl>(std::make_shared<SequentialImpl>()) {}
  std::shared_ptr<Module> operator[](int64_t index) const { return get()->ptr(index); }
};

// A list of modules, indexed like a Python list; no forward of its own.
class ModuleListImpl : public Module {
 public:
  ModuleListImpl() = default;
  template <typename First, typename... Rest,
            typename = std::enable_if_t<!std::is_same<std::decay_t<First>, ModuleListImpl>::value>>
  explicit ModuleListImpl(First&& first, Rest&&... rest) {
    push_back(std::forward<First>(first));
    (push_back(std::forward<Rest>(rest)), ...);
  }
  template <typename M>
  void push_back(M&& module) {
    add(detail::make_entry(std::forward<M>(module)).module);
  }
  template <typename M>
  void append(M&& module) {
    push_back(std::forward<M>(module));
  }
  template <typename M>
  void insert(int64_t index, M&& module) {
    insert_module(index, detail::make_entry(std::forward<M>(module)).module);
  }
  void extend(const ModuleListImpl& other);

  size_t size() const { return modules_.size(); }
  bool is_empty() const { return modules_.empty(); }
  std::shared_ptr<Module> operator[](int64_t index) const { return ptr(index); }
  std::shared_ptr<Module> ptr(int64_t index) const;
  template <typename T>
  std::shared_ptr<T> ptr(int64_t index) const {
    auto p = std::dynamic_pointer_cast<T>(ptr(index));
    RNNKIT_CHECK(p != nullptr, "ModuleList: the module at index ", index, " (", ptr(index)->name(),
                 ") is not of the requested type");
    return p;
  }
  template <typename T>
  T& at(int64_t index) const {
    return *ptr<T>(index);
  }
  std::vector<std::shared_ptr<Module>>::const_iterator begin() const { return modules_.begin(); }
  std::vector<std::shared_ptr<Module>>::const_iterator end() const { return modules_.end(); }

 private:
  void add(std::shared_ptr<Module> module);
  void insert_module(int64_t index, std::shared_ptr<Module> module);
  std::vector<std::shared_ptr<Module>> modules_;
};

class ModuleList : public ModuleHolder<ModuleListImpl> {
 public:
  using ModuleHolder<ModuleListImpl>::ModuleHolder;
  ModuleList() : ModuleHolder<ModuleListImpl>(std::make_shared<ModuleListImpl>()) {}
  std::shared_ptr<Module> operator[](int64_t index) const { return get()->ptr(index); }
};

// Modules by name in insertion order, like a Python dict; no forward of its own.
class ModuleDictImpl : public Module {
 public:
  ModuleDictImpl() = default;
  // Adds `module` under `key`, or replaces the module already there (keeping its position).
  template <typename M>
  void insert(const std::string& key, M&& module) {
    set(key, detail::make_entry(std::forward<M>(module)).module);
  }
  template <typename M>
  void update(const std::vector<std::pair<std::string, M>>& items) {
    for (const auto& kv : items) insert(kv.first, kv.second);
  }

  size_t size() const { return keys_.size(); }
  bool is_empty() const { return keys_.empty(); }
  bool contains(const std::string& key) const;
  const std::vector<std::string>& keys() const { return keys_; }
  std::vector<std::shared_ptr<Module>> values() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> items() const { return named_children(); }
  // Throws naming the key when absent.
  std::shared_ptr<Module> operator[](const std::string& key) const;
  template <typename T>
  std::shared_ptr<T> ptr(const std::string& key) const {
    auto p = std::dynamic_pointer_cast<T>((*this)[key]);
    RNNKIT_CHECK(p != nullptr, "ModuleDict: the module under '", key, "' is not of the requested type");
    return p;
  }
  template <typename T>
  T& at(const std::string& key) const {
    return *ptr<T>(key);
  }

 private:
  void set(const std::string& key, std::shared_ptr<Module> module);
  std::vector<std::string> keys_;
};

class ModuleDict : public ModuleHolder<ModuleDictImpl> {
 public:
  using ModuleHolder<ModuleDictImpl>::ModuleHolder;
  ModuleDict() : ModuleHolder<ModuleDictImpl>(std::make_shared<ModuleDictImpl>()) {}
  std::shared_ptr<Module> operator[](const std::string& key) const { return (*get())[key]; }
};

}  // namespace rnnkit::nn
