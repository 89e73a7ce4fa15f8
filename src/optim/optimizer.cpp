#include "rnnkit/optim/optimizer.h"

#include <map>
#include <set>
#include <typeinfo>

#include "optim/field_io.h"
#include "optim/step_util.h"
#include "rnnkit/autograd/node.h"

namespace rnnkit::optim {

// ---------------------------------------------------------------- options

namespace {

// Finds one field by name; reads it and optionally assigns it.
class FieldByName final : public FieldVisitor {
 public:
  FieldByName(const std::string& name, const double* assign) : name_(name), assign_(assign) {}
  void operator()(const std::string& name, double& value) override {
    if (name != name_) return;
    found = true;
    if (assign_) value = *assign_;
    this->value = value;
  }
  void operator()(const std::string& name, bool& value) override {
    if (name != name_) return;
    found = true;
    if (assign_) value = *assign_ != 0.0;
    this->value = value ? 1.0 : 0.0;
  }
  void operator()(const std::string& name, int64_t& value) override {
    if (name != name_) return;
    found = true;
    if (assign_) value = static_cast<int64_t>(*assign_);
    this->value = static_cast<double>(value);
  }
  void operator()(const std::string& name, std::vector<int64_t>&) override {}
  bool found = false;
  double value = 0;

 private:
  const std::string& name_;
  const double* assign_;
};

class FieldNames final : public FieldVisitor {
 public:
  void operator()(const std::string& name, double&) override { names.push_back(name); }
  void operator()(const std::string& name, bool&) override { names.push_back(name); }
  void operator()(const std::string& name, int64_t&) override { names.push_back(name); }
  void operator()(const std::string& name, std::vector<int64_t>&) override { names.push_back(name); }
  std::vector<std::string> names;
};

// Visiting only reads fields when the visitor does not assign.
OptimizerOptions& readable(const OptimizerOptions& options) { return const_cast<OptimizerOptions&>(options); }

}  // namespace

bool OptimizerOptions::has(const std::string& name) const {
  FieldByName f(name, nullptr);
  readable(*this).visit(f);
  return f.found;
}

double OptimizerOptions::get(const std::string& name) const {
  FieldByName f(name, nullptr);
  readable(*this).visit(f);
  RNNKIT_CHECK(f.found, "OptimizerOptions.get: no option named \"", name, "\"");
  return f.value;
}

void OptimizerOptions::set(const std::string& name, double value) {
  FieldByName f(name, &value);
  visit(f);
  RNNKIT_CHECK(f.found, "OptimizerOptions.set: no option named \"", name, "\"");
}

std::vector<std::string> OptimizerOptions::names() const {
  FieldNames f;
  readable(*this).visit(f);
  return f.names;
}

// ---------------------------------------------------------------- param groups

OptimizerParamGroup::OptimizerParamGroup(std::vector<Tensor> params) : params_(std::move(params)) {}

OptimizerParamGroup::OptimizerParamGroup(std::vector<Tensor> params, std::unique_ptr<OptimizerOptions> options)
    : params_(std::move(params)), options_(std::move(options)) {}

OptimizerParamGroup::OptimizerParamGroup(const OptimizerParamGroup& other)
    : params_(other.params_),
      options_(other.options_ ? other.options_->clone() : nullptr),
      initial_lr_(other.initial_lr_) {}

OptimizerParamGroup& OptimizerParamGroup::operator=(const OptimizerParamGroup& other) {
  if (this != &other) {
    params_ = other.params_;
    options_ = other.options_ ? other.options_->clone() : nullptr;
    initial_lr_ = other.initial_lr_;
  }
  return *this;
}

OptimizerOptions& OptimizerParamGroup::options() {
  RNNKIT_CHECK(options_ != nullptr, "OptimizerParamGroup.options: this group has no options of its own yet");
  return *options_;
}

const OptimizerOptions& OptimizerParamGroup::options() const {
  RNNKIT_CHECK(options_ != nullptr, "OptimizerParamGroup.options: this group has no options of its own yet");
  return *options_;
}

// ---------------------------------------------------------------- optimizer

Optimizer::Optimizer(std::string name, std::vector<OptimizerParamGroup> param_groups,
                     std::unique_ptr<OptimizerOptions> defaults)
    : name_(std::move(name)), defaults_(std::move(defaults)) {
  defaults_->validate();
  RNNKIT_CHECK(!param_groups.empty(), "optimizer got an empty parameter list");
  for (auto& group : param_groups) add_group(std::move(group));
}

std::vector<OptimizerParamGroup> Optimizer::single_group(std::vector<Tensor> params) {
  RNNKIT_CHECK(!params.empty(), "optimizer got an empty parameter list");
  std::vector<OptimizerParamGroup> groups;
  groups.emplace_back(std::move(params));
  return groups;
}

void Optimizer::add_group(OptimizerParamGroup group) {
  if (!group.has_options()) {
    group.set_options(defaults_->clone());
  } else {
    const OptimizerOptions& options = group.options();
    RNNKIT_CHECK(typeid(options) == typeid(*defaults_), name_,
                 ".add_param_group: the group's options belong to another optimizer (expected ", name_, "Options)");
    options.validate();
  }
  std::set<const TensorImpl*> seen;
  for (const auto& existing : param_groups_)
    for (const Tensor& p : existing.params()) seen.insert(p.impl().get());
  std::set<const TensorImpl*> in_group;
  for (const Tensor& p : group.params()) {
    RNNKIT_CHECK(p.defined(), name_, ".add_param_group: a parameter is an undefined tensor");
    RNNKIT_CHECK(p.is_leaf(), "can't optimize a non-leaf Tensor");
    RNNKIT_CHECK(p.dtype() == kFloat32 || p.dtype() == kFloat64, name_,
                 ".add_param_group: parameters must be torch.float32 or torch.float64, got ", dtype_name(p.dtype()));
    RNNKIT_CHECK(p.device().is_cpu(), name_, ".add_param_group: parameters must be on the CPU, got ", p.device());
    RNNKIT_CHECK(in_group.insert(p.impl().get()).second,
                 "optimizer contains a parameter group with duplicate parameters");
    RNNKIT_CHECK(!seen.count(p.impl().get()), "some parameters appear in more than one parameter group");
  }
  param_groups_.push_back(std::move(group));
}

void Optimizer::add_param_group(const OptimizerParamGroup& group) {
  add_group(group);
  init_group_state(param_groups_.back());
}

namespace {
// PyTorch's torch.enable_grad(): the closure builds a graph even when step()
// itself is called under no_grad.
class EnableGradGuard {
 public:
  EnableGradGuard() : prev_(autograd::grad_mode_enabled()) { autograd::set_grad_mode(true); }
  ~EnableGradGuard() { autograd::set_grad_mode(prev_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};
}  // namespace

Tensor Optimizer::step(const LossClosure& closure) {
  Tensor loss;
  if (closure) {
    EnableGradGuard enable;
    loss = closure();
  }
  NoGradGuard no_grad;
  for (auto& group : param_groups_) step_group(group);
  return loss;
}

void Optimizer::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (auto& group : param_groups_)
    for (Tensor& p : group.params()) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      if (set_to_none)
        p.set_grad(Tensor());
      else
        g.zero_();
    }
}

std::vector<Tensor> Optimizer::parameters() const {
  std::vector<Tensor> out;
  for (const auto& group : param_groups_) out.insert(out.end(), group.params().begin(), group.params().end());
  return out;
}

OptimizerParamState* Optimizer::state(const Tensor& param) {
  auto it = state_.find(param.impl().get());
  return it == state_.end() ? nullptr : it->second.get();
}

const OptimizerParamState* Optimizer::state(const Tensor& param) const {
  auto it = state_.find(param.impl().get());
  return it == state_.end() ? nullptr : it->second.get();
}

Tensor Optimizer::checked_grad(const Tensor& param) const {
  Tensor g = param.grad();
  if (!g.defined()) return g;
  RNNKIT_CHECK(g.sizes() == param.sizes(), name_, ".step: a gradient of shape ", shape_str(g.sizes()),
               " belongs to a parameter of shape ", shape_str(param.sizes()));
  RNNKIT_CHECK(g.dtype() == param.dtype(), name_, ".step: a gradient of dtype ", dtype_name(g.dtype()),
               " belongs to a parameter of dtype ", dtype_name(param.dtype()));
  return g.is_contiguous() ? g : g.contiguous();
}

// ---------------------------------------------------------------- state_dict

namespace {

class StateWriter final : public StateVisitor {
 public:
  StateWriter(StateDict& out, std::string prefix) : out_(out), prefix_(std::move(prefix)) {}
  void tensor(const std::string& name, Tensor& value, bool) override {
    if (value.defined()) out_.insert(prefix_ + name, value.detach());
  }
  void count(const std::string& name, int64_t& value) override {
    out_.insert(prefix_ + name, scalar_tensor(static_cast<double>(value), kFloat64));
  }

 private:
  StateDict& out_;
  std::string prefix_;
};

// Fills a fresh state from "state.<id>.<name>" keys: shapes must match the
// parameter's; values are converted to its dtype and copied.
class StateReader final : public StateVisitor {
 public:
  StateReader(const StateDict& in, std::string prefix, const Tensor& param, const std::string& owner,
              std::set<std::string>& used)
      : in_(in), prefix_(std::move(prefix)), param_(param), owner_(owner), used_(used) {}
  void tensor(const std::string& name, Tensor& value, bool required) override {
    const std::string key = prefix_ + name;
    const Tensor* t = in_.find(key);
    if (!t) {
      RNNKIT_CHECK(!required, owner_, ".load_state_dict: missing key \"", key, "\"");
      return;
    }
    RNNKIT_CHECK(t->sizes() == param_.sizes(), owner_, ".load_state_dict: \"", key, "\" has shape ",
                 shape_str(t->sizes()), ", but its parameter has shape ", shape_str(param_.sizes()));
    RNNKIT_CHECK(t->is_floating_point(), owner_, ".load_state_dict: \"", key, "\" must be floating point, got ",
                 dtype_name(t->dtype()));
    value = empty(param_.sizes(), param_.dtype());
    value.copy_(*t);
    used_.insert(key);
  }
  void count(const std::string& name, int64_t& value) override {
    const std::string key = prefix_ + name;
    const Tensor* t = in_.find(key);
    RNNKIT_CHECK(t != nullptr, owner_, ".load_state_dict: missing key \"", key, "\"");
    RNNKIT_CHECK(t->numel() == 1, owner_, ".load_state_dict: \"", key, "\" must hold one number, got shape ",
                 shape_str(t->sizes()));
    const double v = t->item();
    RNNKIT_CHECK(v >= 0 && v == static_cast<double>(static_cast<int64_t>(v)), owner_, ".load_state_dict: \"", key,
                 "\" must be a non-negative integer, got ", v);
    value = static_cast<int64_t>(v);
    used_.insert(key);
  }

 private:
  const StateDict& in_;
  std::string prefix_;
  const Tensor& param_;
  const std::string& owner_;
  std::set<std::string>& used_;
};

std::string group_prefix(size_t g) { return "param_groups." + std::to_string(g) + "."; }

}  // namespace

StateDict Optimizer::state_dict() const {
  StateDict out;
  int64_t index = 0;
  for (const auto& group : param_groups_)
    for (const Tensor& p : group.params()) {
      auto it = state_.find(p.impl().get());
      if (it != state_.end()) {
        StateWriter writer(out, "state." + std::to_string(index) + ".");
        it->second->visit(writer);
      }
      ++index;
    }
  index = 0;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& group = param_groups_[g];
    std::vector<int64_t> ids;
    for (size_t j = 0; j < group.params().size(); ++j) ids.push_back(index++);
    out.insert(group_prefix(g) + "params", from_vector(ids, {static_cast<int64_t>(ids.size())}));
    detail::FieldWriter writer(out, group_prefix(g));
    readable(group.options()).visit(writer);
    if (group.initial_lr()) out.insert(group_prefix(g) + "initial_lr", scalar_tensor(*group.initial_lr(), kFloat64));
  }
  return out;
}

void Optimizer::load_state_dict(const StateDict& state) {
  const std::string owner = name_;
  std::set<std::string> used;

  size_t saved_groups = 0;
  while (state.contains(group_prefix(saved_groups) + "params")) ++saved_groups;
  RNNKIT_CHECK(saved_groups == param_groups_.size(), owner,
               ".load_state_dict: loaded state dict has a different number of parameter groups (", saved_groups,
               " saved, ", param_groups_.size(), " here)");

  // Saved parameter ids -> this optimizer's parameters, position by position (as PyTorch maps them).
  std::map<int64_t, std::pair<Tensor, size_t>> by_id;
  std::vector<std::unique_ptr<OptimizerOptions>> options;
  std::vector<std::optional<double>> initial_lrs;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& group = param_groups_[g];
    const std::string key = group_prefix(g) + "params";
    const Tensor& ids = state.at(key);
    used.insert(key);
    RNNKIT_CHECK(ids.dim() == 1 && ids.dtype() == kInt64, owner, ".load_state_dict: \"", key,
                 "\" must be a 1-D int64 tensor, got shape ", shape_str(ids.sizes()), " of ", dtype_name(ids.dtype()));
    RNNKIT_CHECK(static_cast<size_t>(ids.numel()) == group.params().size(), owner,
                 ".load_state_dict: loaded state dict contains a parameter group that doesn't match the size of "
                 "optimizer's group (group ",
                 g, ": ", ids.numel(), " saved, ", group.params().size(), " here)");
    const std::vector<int64_t> id_list = ids.to_vector<int64_t>();
    for (size_t j = 0; j < id_list.size(); ++j)
      RNNKIT_CHECK(by_id.emplace(id_list[j], std::make_pair(group.params()[j], g)).second, owner,
                   ".load_state_dict: parameter id ", id_list[j], " appears twice in param_groups");

    options.push_back(group.options().clone());
    detail::FieldReader reader(state, group_prefix(g), owner, /*apply=*/true, &used);
    options.back()->visit(reader);
    options.back()->validate();
    initial_lrs.push_back(std::nullopt);
    if (const Tensor* lr = state.find(group_prefix(g) + "initial_lr")) {
      RNNKIT_CHECK(lr->numel() == 1, owner, ".load_state_dict: \"", group_prefix(g), "initial_lr\" must be 0-d");
      initial_lrs.back() = lr->item();
      used.insert(group_prefix(g) + "initial_lr");
    }
  }

  std::set<int64_t> ids_with_state;
  for (const auto& item : state) {
    const std::string& key = item.first;
    if (key.compare(0, 6, "state.") != 0) continue;
    const size_t dot = key.find('.', 6);
    if (dot == std::string::npos) continue;
    try {
      size_t pos = 0;
      const std::string id = key.substr(6, dot - 6);
      const int64_t v = std::stoll(id, &pos);
      if (pos == id.size()) ids_with_state.insert(v);
    } catch (const std::exception&) {
      // Not a parameter id: reported below as an unexpected key.
    }
  }
  std::unordered_map<const TensorImpl*, std::unique_ptr<OptimizerParamState>> new_state;
  for (int64_t id : ids_with_state) {
    auto it = by_id.find(id);
    if (it == by_id.end()) continue;  // its keys stay unused and are reported
    const Tensor& param = it->second.first;
    std::unique_ptr<OptimizerParamState> s = make_state(param, *options[it->second.second]);
    StateReader reader(state, "state." + std::to_string(id) + ".", param, owner, used);
    s->visit(reader);
    new_state[param.impl().get()] = std::move(s);
  }
  detail::check_no_unexpected_keys(state, used, "", owner);

  for (size_t g = 0; g < param_groups_.size(); ++g) {
    param_groups_[g].set_options(std::move(options[g]));
    param_groups_[g].set_initial_lr(initial_lrs[g]);
  }
  // Parameters without saved state start fresh (Adagrad refills its eager state).
  state_ = std::move(new_state);
  for (auto& group : param_groups_) init_group_state(group);
}

}  // namespace rnnkit::optim

namespace rnnkit::optim::detail {

void check_buffer(const Tensor& buffer, const Tensor& param, const char* optimizer, const char* name) {
  RNNKIT_CHECK(buffer.dtype() == param.dtype() && buffer.sizes() == param.sizes() && buffer.is_contiguous(), optimizer,
               ".step: the state \"", name, "\" (", dtype_name(buffer.dtype()), " ", shape_str(buffer.sizes()),
               ") no longer matches its parameter (", dtype_name(param.dtype()), " ", shape_str(param.sizes()),
               "); load a matching state or build a new optimizer");
}

}  // namespace rnnkit::optim::detail
