#include "rnnkit/nn/container.h"

#include <algorithm>

namespace rnnkit::nn {

namespace detail {

size_t wrap_index(int64_t index, size_t size) {
  const int64_t n = static_cast<int64_t>(size);
  RNNKIT_CHECK(index >= -n && index < n, "index ", index, " is out of range");
  return static_cast<size_t>(index < 0 ? index + n : index);
}

}  // namespace detail

// ---------------------------------------------------------------- Sequential

void SequentialImpl::add(const std::string& name, detail::Entry entry) {
  register_module(name, entry.module);
  modules_.push_back(entry.module);
  entries_.push_back(std::move(entry));
}

void SequentialImpl::insert_entry(int64_t index, detail::Entry entry) {
  const int64_t n = static_cast<int64_t>(entries_.size());
  RNNKIT_CHECK(index >= -n && index <= n, "Index out of range: ", index);
  if (index < 0) index += n;
  // Children are positional: shift the tail one name up, then put the new one at `index`.
  entries_.insert(entries_.begin() + index, std::move(entry));
  modules_.insert(modules_.begin() + index, entries_[static_cast<size_t>(index)].module);
  register_module(std::to_string(n), modules_.back());
  for (int64_t i = index; i < n; ++i) replace_module(std::to_string(i), modules_[static_cast<size_t>(i)]);
}

void SequentialImpl::extend(const SequentialImpl& other) {
  for (const auto& e : other.entries_) add(std::to_string(entries_.size()), e);
}

Tensor SequentialImpl::forward(const Tensor& input) {
  Tensor x = input;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const auto& e = entries_[i];
    RNNKIT_CHECK(static_cast<bool>(e.forward), "Sequential.forward: module ", i, " (", e.module->name(),
                 ") has no forward(Tensor) -> Tensor");
    x = e.forward(x);
  }
  return x;
}

std::shared_ptr<Module> SequentialImpl::ptr(int64_t index) const {
  return modules_[detail::wrap_index(index, modules_.size())];
}

// ---------------------------------------------------------------- ModuleList

void ModuleListImpl::add(std::shared_ptr<Module> module) {
  register_module(std::to_string(modules_.size()), module);
  modules_.push_back(std::move(module));
}

void ModuleListImpl::insert_module(int64_t index, std::shared_ptr<Module> module) {
  const int64_t n = static_cast<int64_t>(modules_.size());
  // Python's list.insert clamps the index.
  if (index < 0) index = std::max<int64_t>(index + n, 0);
  index = std::min(index, n);
  modules_.insert(modules_.begin() + index, std::move(module));
  register_module(std::to_string(n), modules_.back());
  for (int64_t i = index; i < n; ++i) replace_module(std::to_string(i), modules_[static_cast<size_t>(i)]);
}

void ModuleListImpl::extend(const ModuleListImpl& other) {
  for (const auto& m : other.modules_) add(m);
}

std::shared_ptr<Module> ModuleListImpl::ptr(int64_t index) const {
  return modules_[detail::wrap_index(index, modules_.size())];
}

// ---------------------------------------------------------------- ModuleDict

bool ModuleDictImpl::contains(const std::string& key) const {
  return std::find(keys_.begin(), keys_.end(), key) != keys_.end();
}

std::vector<std::shared_ptr<Module>> ModuleDictImpl::values() const { return children(); }

std::shared_ptr<Module> ModuleDictImpl::operator[](const std::string& key) const {
  for (const auto& kv : named_children())
    if (kv.first == key) return kv.second;
  throw Error("ModuleDict: no module under key '" + key + "'");
}

void ModuleDictImpl::set(const std::string& key, std::shared_ptr<Module> module) {
  if (contains(key)) {
    replace_module(key, std::move(module));
    return;
  }
  register_module(key, std::move(module));
  keys_.push_back(key);
}

}  // namespace rnnkit::nn
