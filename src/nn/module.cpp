#include "rnnkit/nn/module.h"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <ostream>
#include <sstream>
#include <typeinfo>

#include "rnnkit/autograd/node.h"
#include "tensor/native.h"

namespace rnnkit::nn {

Module::Module(std::string name) : name_(std::move(name)) {}

const std::string& Module::name() const {
  if (name_.empty()) {
    // Derived from the dynamic type: "rnnkit::nn::LSTMImpl" -> "LSTM".
    int status = 0;
    char* dem = abi::__cxa_demangle(typeid(*this).name(), nullptr, nullptr, &status);
    std::string full = status == 0 && dem ? dem : typeid(*this).name();
    std::free(dem);
    const size_t colon = full.rfind("::");
    if (colon != std::string::npos) full = full.substr(colon + 2);
    if (full.size() > 4 && full.compare(full.size() - 4, 4, "Impl") == 0) full.resize(full.size() - 4);
    name_ = full;
  }
  return name_;
}

void Module::check_new_name(const std::string& name, const char* what) const {
  RNNKIT_CHECK(!name.empty(), name_, ": ", what, " name can't be empty string \"\"");
  RNNKIT_CHECK(name.find('.') == std::string::npos, name_, ": ", what, " name can't contain \".\", got '", name,
               "'");
  auto has = [&](const auto& list) {
    return std::any_of(list.begin(), list.end(), [&](const auto& kv) { return kv.first == name; });
  };
  RNNKIT_CHECK(!has(parameters_) && !has(buffers_) && !has(children_), "register ", what, ": attribute '", name,
               "' already exists");
}

Tensor& Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
  check_new_name(name, "parameter");
  if (tensor.defined()) {
    RNNKIT_CHECK(tensor.is_leaf(), "register_parameter: cannot assign a non-leaf tensor as parameter '", name,
                 "' (detach it first)");
    tensor.requires_grad_(requires_grad);
  }
  parameters_.emplace_back(name, tensor);
  return parameters_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor tensor, bool persistent) {
  check_new_name(name, "buffer");
  buffers_.emplace_back(name, tensor);
  if (!persistent) non_persistent_.push_back(name);
  return buffers_.back().second;
}

void Module::register_module_impl(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name(name, "submodule");
  RNNKIT_CHECK(module != nullptr, "register_module: submodule '", name, "' is empty");
  children_.emplace_back(name, std::move(module));
}

Tensor& Module::replace_parameter(const std::string& name, Tensor tensor) {
  for (auto& kv : parameters_)
    if (kv.first == name) {
      kv.second = std::move(tensor);
      return kv.second;
    }
  throw Error("replace_parameter: no parameter named '" + name + "' in " + this->name());
}

void Module::replace_module(const std::string& name, std::shared_ptr<Module> module) {
  for (auto& kv : children_)
    if (kv.first == name) {
      kv.second = std::move(module);
      return;
    }
  throw Error("replace_module: no submodule named '" + name + "'");
}

void Module::collect_named(const std::string& prefix, bool params, bool recurse,
                           std::vector<std::pair<std::string, Tensor>>* out) const {
  for (const auto& kv : params ? parameters_ : buffers_)
    if (kv.second.defined()) out->emplace_back(prefix + kv.first, kv.second);
  if (!recurse) return;
  for (const auto& kv : children_) kv.second->collect_named(prefix + kv.first + ".", params, true, out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect_named("", true, recurse, &out);
  // A tensor shared by two modules (weight tying) is listed once, as in PyTorch.
  std::vector<std::pair<std::string, Tensor>> unique;
  for (auto& kv : out)
    if (std::none_of(unique.begin(), unique.end(), [&](const auto& u) { return u.second.is_same(kv.second); }))
      unique.push_back(kv);
  return unique;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& kv : named_parameters(recurse)) out.push_back(kv.second);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect_named("", false, recurse, &out);
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& kv : named_buffers(recurse)) out.push_back(kv.second);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  for (const auto& kv : children_) out.push_back(kv.second);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const { return children_; }

std::vector<std::shared_ptr<Module>> Module::modules() {
  std::vector<std::shared_ptr<Module>> out{shared_from_this()};
  for (const auto& kv : children_)
    for (auto& m : kv.second->modules()) out.push_back(m);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const Tensor& p : parameters()) n += p.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& kv : children_) kv.second->train(on);
}

void Module::zero_grad(bool set_to_none) {
  for (Tensor& p : parameters()) {
    if (!p.grad().defined()) continue;
    if (set_to_none) {
      p.set_grad(Tensor());
    } else {
      Tensor g = p.grad();
      NoGradGuard guard;
      g.zero_();
    }
  }
}

StateDict Module::state_dict() const {
  StateDict sd;
  std::vector<std::pair<std::string, Tensor>> items;
  // PyTorch order: per module, its parameters then its persistent buffers, then children.
  struct Walker {
    static void walk(const Module& m, const std::string& prefix, StateDict& sd) {
      for (const auto& kv : m.parameters_)
        if (kv.second.defined()) sd.insert(prefix + kv.first, kv.second.detach());
      for (const auto& kv : m.buffers_)
        if (kv.second.defined() &&
            std::find(m.non_persistent_.begin(), m.non_persistent_.end(), kv.first) == m.non_persistent_.end())
          sd.insert(prefix + kv.first, kv.second.detach());
      for (const auto& kv : m.children_) walk(*kv.second, prefix + kv.first + ".", sd);
    }
  };
  Walker::walk(*this, "", sd);
  return sd;
}

void Module::load_state_dict(const StateDict& state, bool strict) {
  StateDict own = state_dict();
  std::vector<std::string> missing, unexpected;
  std::ostringstream mismatches;
  for (const auto& [key, target] : own) {
    const Tensor* src = state.find(key);
    if (!src) {
      missing.push_back(key);
      continue;
    }
    if (src->sizes() != target.sizes()) {
      mismatches << "\n\tsize mismatch for " << key << ": copying a param with shape torch.Size("
                 << shape_str(src->sizes()) << ") from checkpoint, the shape in current model is torch.Size("
                 << shape_str(target.sizes()) << ").";
    }
  }
  for (const auto& kv : state)
    if (!own.contains(kv.first)) unexpected.push_back(kv.first);
  std::ostringstream err;
  auto list = [](const std::vector<std::string>& keys) {
    std::string s;
    for (size_t i = 0; i < keys.size(); ++i) s += (i ? ", \"" : "\"") + keys[i] + "\"";
    return s;
  };
  if (strict && !missing.empty()) err << "\n\tMissing key(s) in state_dict: " << list(missing) << ". ";
  if (strict && !unexpected.empty()) err << "\n\tUnexpected key(s) in state_dict: " << list(unexpected) << ". ";
  err << mismatches.str();
  RNNKIT_CHECK(err.str().empty(), "Error(s) in loading state_dict for ", name(), ":", err.str());
  NoGradGuard guard;
  for (const auto& [key, target] : own) {
    const Tensor* src = state.find(key);
    if (!src) continue;
    RNNKIT_CHECK(is_floating(src->dtype()) == is_floating(target.dtype()), "Error(s) in loading state_dict for ",
                 name(), ":\n\tdtype mismatch for ", key, ": checkpoint has ", dtype_name(src->dtype()),
                 ", the model has ", dtype_name(target.dtype()), ".");
    native::copy_into(target, *src);
  }
}

void Module::to(Dtype dtype) {
  for (auto& m : modules()) {
    for (auto& kv : m->parameters_)
      if (kv.second.defined() && is_floating(kv.second.dtype())) kv.second.set_data(kv.second.detach().to(dtype));
    for (auto& kv : m->buffers_)
      if (kv.second.defined() && is_floating(kv.second.dtype())) kv.second.set_data(kv.second.detach().to(dtype));
  }
}

namespace {
// PyTorch's Module.__repr__: one line when there are no children and the
// extra repr is one line; otherwise one line per entry, indented.
void print_tree(std::ostream& os, const Module& m, int indent) {
  const std::string extra = m.extra_repr();
  auto kids = m.named_children();
  os << m.name() << "(";
  if (kids.empty() && extra.find('\n') == std::string::npos) {
    os << extra << ")";
    return;
  }
  os << "\n";
  if (!extra.empty()) {
    std::istringstream lines(extra);
    for (std::string line; std::getline(lines, line);) os << std::string(indent + 2, ' ') << line << "\n";
  }
  for (const auto& kv : kids) {
    os << std::string(indent + 2, ' ') << "(" << kv.first << "): ";
    print_tree(os, *kv.second, indent + 2);
    os << "\n";
  }
  os << std::string(indent, ' ') << ")";
}
}  // namespace

std::ostream& operator<<(std::ostream& os, const Module& module) {
  print_tree(os, module, 0);
  return os;
}

}  // namespace rnnkit::nn
