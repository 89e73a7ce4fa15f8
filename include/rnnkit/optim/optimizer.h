#pragma once
// optim::Optimizer: the base of every optimizer, shaped like libtorch's.
//
//   optim::SGD opt({optim::OptimizerParamGroup(encoder->parameters()),                 // defaults
//                   optim::OptimizerParamGroup(decoder->parameters(), optim::SGDOptions(0.01))},
//                  optim::SGDOptions(0.1).momentum(0.9));
//   opt.zero_grad(); loss.backward(); opt.step();
//
// Each parameter group holds its own copy of the options (every option, as
// PyTorch's param_groups dicts do); schedulers change a group's lr through
// options().set_lr(). step() skips parameters whose grad is undefined, runs
// under NoGradGuard and updates parameters in place with one fused pass per
// parameter tensor (src/optim/update_kernels.h), with PyTorch 1.13's formulas
// and its rounding order.
//
// state_dict() holds only tensors, so it goes into a safetensors file as is:
//   state.<i>.<name>            per-parameter state (exp_avg, momentum_buffer, ...;
//                               step as a 0-d float64), i numbering the parameters
//                               over all groups in order, as PyTorch does
//   param_groups.<g>.params     1-D int64: the parameter numbers of group g
//   param_groups.<g>.<option>   0-d float64 per option (bools 0/1, betas as
//                               betas.0 and betas.1), initial_lr once a scheduler set it
// The tensors of state_dict() share storage with the live state (clone them to
// keep a snapshot); load_state_dict() copies. Loading validates everything
// before it changes anything and names the offending key.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rnnkit/options_arg.h"
#include "rnnkit/state_dict.h"
#include "rnnkit/tensor.h"

// Declares one option of an options struct: a private field `name_` with a
// chainable setter `name(value)` and getters `name()`, as libtorch's TORCH_ARG.
// Write the default after it: `RNNKIT_OPTIM_ARG(double, momentum) = 0;`
#define RNNKIT_OPTIM_ARG(T, name) RNNKIT_ARG(T, name)

namespace rnnkit::optim {

// Visits named fields: the one list of an options struct's (or a scheduler's)
// fields that saving, loading and the generic get/set by name all use.
class FieldVisitor {
 public:
  virtual ~FieldVisitor() = default;
  virtual void operator()(const std::string& name, double& value) = 0;
  virtual void operator()(const std::string& name, bool& value) = 0;
  virtual void operator()(const std::string& name, int64_t& value) = 0;
  virtual void operator()(const std::string& name, std::vector<int64_t>& value) = 0;
};

// Options of one optimizer (SGDOptions, AdamOptions, ...).
class OptimizerOptions {
 public:
  virtual ~OptimizerOptions() = default;
  virtual std::unique_ptr<OptimizerOptions> clone() const = 0;
  virtual double get_lr() const = 0;
  virtual void set_lr(double lr) = 0;
  // Throws rnnkit::Error with PyTorch's message for an invalid value.
  virtual void validate() const = 0;
  // Every hyperparameter by PyTorch's name, in a fixed order ("lr", ...,
  // "betas.0", "betas.1"); bools are visited as bool.
  virtual void visit(FieldVisitor& visitor) = 0;

  // Generic access by name (bools read as 0/1); used by schedulers that
  // cycle "momentum" or "betas.0", and by loading.
  bool has(const std::string& name) const;
  double get(const std::string& name) const;  // throws for an unknown name
  void set(const std::string& name, double value);
  std::vector<std::string> names() const;
};

// Visits the tensors and counters of one parameter's optimizer state.
class StateVisitor {
 public:
  virtual ~StateVisitor() = default;
  // `required`: a loaded state must hold this tensor (absent ones stay undefined).
  virtual void tensor(const std::string& name, Tensor& value, bool required) = 0;
  virtual void count(const std::string& name, int64_t& value) = 0;
};

// Per-parameter state (moment buffers, step count) of one optimizer.
class OptimizerParamState {
 public:
  virtual ~OptimizerParamState() = default;
  virtual void visit(StateVisitor& visitor) = 0;
};

class OptimizerParamGroup {
 public:
  // A group that takes the optimizer's defaults.
  OptimizerParamGroup(std::vector<Tensor> params);  // NOLINT: implicit, as in libtorch
  OptimizerParamGroup(std::vector<Tensor> params, std::unique_ptr<OptimizerOptions> options);
  // OptimizerParamGroup(params, optim::SGDOptions(0.01)).
  template <typename Options, typename = std::enable_if_t<std::is_base_of<OptimizerOptions, Options>::value>>
  OptimizerParamGroup(std::vector<Tensor> params, const Options& options)
      : OptimizerParamGroup(std::move(params), options.clone()) {}
  OptimizerParamGroup(const OptimizerParamGroup& other);
  OptimizerParamGroup& operator=(const OptimizerParamGroup& other);
  OptimizerParamGroup(OptimizerParamGroup&&) = default;
  OptimizerParamGroup& operator=(OptimizerParamGroup&&) = default;

  bool has_options() const { return options_ != nullptr; }
  OptimizerOptions& options();
  const OptimizerOptions& options() const;
  void set_options(std::unique_ptr<OptimizerOptions> options) { options_ = std::move(options); }
  std::vector<Tensor>& params() { return params_; }
  const std::vector<Tensor>& params() const { return params_; }

  // The lr a scheduler started from (PyTorch's group['initial_lr']): set by
  // the first scheduler built on the optimizer, saved in state_dict.
  const std::optional<double>& initial_lr() const { return initial_lr_; }
  void set_initial_lr(std::optional<double> lr) { initial_lr_ = lr; }

 private:
  std::vector<Tensor> params_;
  std::unique_ptr<OptimizerOptions> options_;
  std::optional<double> initial_lr_;
};

class Optimizer {
 public:
  using LossClosure = std::function<Tensor()>;

  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Adds a group (its options default to a copy of the optimizer's defaults).
  // Throws for a parameter that is already optimized, not a leaf, or not
  // float32/float64.
  void add_param_group(const OptimizerParamGroup& group);
  // Runs `closure` (with grad mode on) if given, then updates every parameter
  // that has a gradient. Returns the closure's loss (undefined without one).
  Tensor step(const LossClosure& closure = nullptr);
  // set_to_none=true drops the gradients; false zeroes them in place.
  void zero_grad(bool set_to_none = true);

  std::vector<OptimizerParamGroup>& param_groups() { return param_groups_; }
  const std::vector<OptimizerParamGroup>& param_groups() const { return param_groups_; }
  const OptimizerOptions& defaults() const { return *defaults_; }
  OptimizerOptions& defaults() { return *defaults_; }
  // All parameters over all groups, in order (their index is the state_dict's).
  std::vector<Tensor> parameters() const;
  // "SGD", "Adam", ...: what messages call this optimizer.
  const std::string& name() const { return name_; }

  StateDict state_dict() const;
  void load_state_dict(const StateDict& state);

  // This parameter's state, or null before its first step.
  OptimizerParamState* state(const Tensor& param);
  const OptimizerParamState* state(const Tensor& param) const;

 protected:
  Optimizer(std::string name, std::vector<OptimizerParamGroup> param_groups,
            std::unique_ptr<OptimizerOptions> defaults);
  // One group of `params` taking the defaults; throws for an empty list as PyTorch does.
  static std::vector<OptimizerParamGroup> single_group(std::vector<Tensor> params);

  // Updates the parameters of one group that have a gradient (grad mode is off).
  virtual void step_group(OptimizerParamGroup& group) = 0;
  // An empty state for `param` with the fields its group's options need, to
  // be filled by load_state_dict.
  virtual std::unique_ptr<OptimizerParamState> make_state(const Tensor& param,
                                                          const OptimizerOptions& options) const = 0;
  // Called for groups added after construction and after a load (Adagrad
  // fills its state eagerly).
  virtual void init_group_state(OptimizerParamGroup& group) {}

  // The state of `param`, created by `make()` on first use.
  template <typename State, typename Make>
  State& state_or_create(const Tensor& param, Make make) {
    auto& slot = state_[param.impl().get()];
    if (!slot) slot = make();
    return static_cast<State&>(*slot);
  }

  // The gradient of `param` checked against it (same shape and dtype, a
  // contiguous tensor), or undefined when it has none.
  Tensor checked_grad(const Tensor& param) const;

 private:
  void add_group(OptimizerParamGroup group);

  std::string name_;
  std::unique_ptr<OptimizerOptions> defaults_;
  std::vector<OptimizerParamGroup> param_groups_;
  std::unordered_map<const TensorImpl*, std::unique_ptr<OptimizerParamState>> state_;
};

}  // namespace rnnkit::optim
