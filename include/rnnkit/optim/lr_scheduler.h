#pragma once
// Learning-rate schedulers with PyTorch 1.13's semantics and numbers.
//
//   optim::SGD opt(model->parameters(), optim::SGDOptions(0.1).momentum(0.9));
//   optim::CosineAnnealingLR sched(opt, /*T_max=*/100);
//   for (epoch ...) { train(opt); sched.step(); }
//
// As in PyTorch, building a scheduler performs its first step (last_epoch
// becomes 0 and the groups get the epoch-0 lr), the first scheduler built on
// an optimizer records each group's lr as initial_lr (base_lrs come from it),
// and step() uses PyTorch's recursive ("chainable") formulas that read the
// groups' current lr, so the numbers match PyTorch's to the last bit.
//
// state_dict() is a StateDict of tensors: counts as 0-d int64 (last_epoch,
// step_count, ...), reals and flags as 0-d float64 (gamma, ...), per-group
// values as "<name>.<g>" (base_lrs.0, last_lr.1) and milestone lists as 1-D
// int64. To resume: build the optimizer and the scheduler as before, then
// load both states (the optimizer's holds the groups' lr and initial_lr).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rnnkit/optim/optimizer.h"

namespace rnnkit::optim {

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  // Advances one epoch (or batch, for OneCycleLR) and sets every group's lr.
  void step();
  // The lr of each group after the last step.
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  int64_t last_epoch() const { return last_epoch_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  Optimizer& optimizer() const { return optimizer_; }
  const std::string& name() const { return name_; }

  StateDict state_dict() const;
  // Restores everything state_dict() saved (hyperparameters included, as
  // PyTorch's does); throws rnnkit::Error naming a missing or unexpected key.
  void load_state_dict(const StateDict& state);

 protected:
  LRScheduler(std::string name, Optimizer& optimizer);
  // PyTorch's _initial_step(): the last statement of a derived constructor.
  void initial_step();
  // The lr of each group for last_epoch_ (already advanced).
  virtual std::vector<double> get_lr() = 0;
  // The derived class's saved fields (after the base's).
  virtual void visit_fields(FieldVisitor& visitor) {}
  // Recomputes what derives from the fields after a load.
  virtual void after_load() {}
  std::vector<double> group_lrs() const;

  Optimizer& optimizer_;
  int64_t last_epoch_ = -1;
  int64_t step_count_ = 0;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;

 private:
  void visit_all(FieldVisitor& visitor);
  std::string name_;
};

// lr *= gamma every step_size epochs.
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);

 protected:
  std::vector<double> get_lr() override;
  void visit_fields(FieldVisitor& visitor) override;

 private:
  int64_t step_size_;
  double gamma_;
};

// lr *= gamma at each milestone epoch (a milestone listed k times: gamma^k).
class MultiStepLR : public LRScheduler {
 public:
  MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma = 0.1);

 protected:
  std::vector<double> get_lr() override;
  void visit_fields(FieldVisitor& visitor) override;

 private:
  std::vector<int64_t> milestones_;  // sorted, repeats kept
  double gamma_;
};

// lr *= gamma every epoch.
class ExponentialLR : public LRScheduler {
 public:
  ExponentialLR(Optimizer& optimizer, double gamma);

 protected:
  std::vector<double> get_lr() override;
  void visit_fields(FieldVisitor& visitor) override;

 private:
  double gamma_;
};

// Cosine annealing from the base lr to eta_min over T_max epochs (and back
// up over the next T_max, as PyTorch's recursive form does).
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min = 0.0);  // NOLINT: PyTorch's name

 protected:
  std::vector<double> get_lr() override;
  void visit_fields(FieldVisitor& visitor) override;

 private:
  int64_t T_max_;
  double eta_min_;
};

// Multiplies the base lr by a factor going linearly from start_factor to
// end_factor over total_iters epochs.
class LinearLR : public LRScheduler {
 public:
  LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3, double end_factor = 1.0, int64_t total_iters = 5);

 protected:
  std::vector<double> get_lr() override;
  void visit_fields(FieldVisitor& visitor) override;

 private:
  double start_factor_, end_factor_;
  int64_t total_iters_;
};

enum class AnnealStrategy { Cos, Linear };

struct OneCycleLROptions {
  /// Peak lr, one for all groups...
  explicit OneCycleLROptions(double max_lr) : max_lr_{max_lr} {}
  /// ...or one per group.
  explicit OneCycleLROptions(std::vector<double> max_lr) : max_lr_(std::move(max_lr)) {}
  /// number of steps in the cycle; or give epochs and steps_per_epoch
  RNNKIT_OPTIM_ARG(std::optional<int64_t>, total_steps);
  /// epochs of the cycle (with steps_per_epoch, when total_steps is not given)
  RNNKIT_OPTIM_ARG(std::optional<int64_t>, epochs);
  /// steps per epoch (with epochs)
  RNNKIT_OPTIM_ARG(std::optional<int64_t>, steps_per_epoch);
  /// fraction of the cycle spent increasing the lr (default 0.3)
  RNNKIT_OPTIM_ARG(double, pct_start) = 0.3;
  /// cosine or linear annealing (default cosine)
  RNNKIT_OPTIM_ARG(AnnealStrategy, anneal_strategy) = AnnealStrategy::Cos;
  /// cycle momentum (SGD, RMSprop) or beta1 (Adam, AdamW) inversely to the lr (default true)
  RNNKIT_OPTIM_ARG(bool, cycle_momentum) = true;
  /// initial lr = max_lr / div_factor (default 25)
  RNNKIT_OPTIM_ARG(double, div_factor) = 25.0;
  /// minimum lr = initial lr / final_div_factor (default 1e4)
  RNNKIT_OPTIM_ARG(double, final_div_factor) = 1e4;
  /// three phases (up, down to the initial lr, down to the minimum) instead of two (default false)
  RNNKIT_OPTIM_ARG(bool, three_phase) = false;

 public:
  /// lowest momentum of the cycle, one for all groups or one per group (default 0.85)
  OneCycleLROptions& base_momentum(double v) {
    base_momentum_ = {v};
    return *this;
  }
  OneCycleLROptions& base_momentum(std::vector<double> v) {
    base_momentum_ = std::move(v);
    return *this;
  }
  const std::vector<double>& base_momentum() const { return base_momentum_; }
  /// highest momentum of the cycle, one for all groups or one per group (default 0.95)
  OneCycleLROptions& max_momentum(double v) {
    max_momentum_ = {v};
    return *this;
  }
  OneCycleLROptions& max_momentum(std::vector<double> v) {
    max_momentum_ = std::move(v);
    return *this;
  }
  const std::vector<double>& max_momentum() const { return max_momentum_; }
  const std::vector<double>& max_lr() const { return max_lr_; }

 private:
  std::vector<double> max_lr_;
  std::vector<double> base_momentum_{0.85};
  std::vector<double> max_momentum_{0.95};
};

// The 1cycle policy: lr from max_lr/div_factor up to max_lr and down to
// max_lr/div_factor/final_div_factor, stepped once per batch; momentum (or
// Adam's beta1) cycles the other way.
class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(Optimizer& optimizer, const OneCycleLROptions& options);
  int64_t total_steps() const { return total_steps_; }

 protected:
  std::vector<double> get_lr() override;
  void visit_fields(FieldVisitor& visitor) override;
  void after_load() override;

 private:
  enum class Point { Initial, Max, Min };  // lr endpoints; for momentum Max and Min mean max/base
  struct Phase {
    double end_step;
    Point start_lr, end_lr, start_momentum, end_momentum;
  };
  void build_phases();
  double anneal(double start, double end, double pct) const;

  int64_t total_steps_;
  double pct_start_;
  AnnealStrategy anneal_strategy_;
  bool cycle_momentum_, use_beta1_ = false, three_phase_;
  std::vector<double> max_lrs_, min_lrs_, max_momentums_, base_momentums_;
  std::vector<Phase> phases_;
};

struct ReduceLROnPlateauOptions {
  enum class Mode { Min, Max };
  enum class ThresholdMode { Rel, Abs };
  /// min: reduce when the metric stops decreasing; max: when it stops increasing (default min)
  RNNKIT_OPTIM_ARG(Mode, mode) = Mode::Min;
  /// new lr = lr * factor; must be < 1 (default 0.1)
  RNNKIT_OPTIM_ARG(double, factor) = 0.1;
  /// epochs without improvement tolerated before reducing (default 10)
  RNNKIT_OPTIM_ARG(int64_t, patience) = 10;
  /// how much better a metric must be to count as an improvement (default 1e-4)
  RNNKIT_OPTIM_ARG(double, threshold) = 1e-4;
  /// rel: better than best * (1 -/+ threshold); abs: than best -/+ threshold (default rel)
  RNNKIT_OPTIM_ARG(ThresholdMode, threshold_mode) = ThresholdMode::Rel;
  /// epochs to wait after a reduction before counting bad epochs again (default 0)
  RNNKIT_OPTIM_ARG(int64_t, cooldown) = 0;
  /// reductions smaller than eps are skipped (default 1e-8)
  RNNKIT_OPTIM_ARG(double, eps) = 1e-8;

 public:
  /// lower bound of the lr, one for all groups or one per group (default 0)
  ReduceLROnPlateauOptions& min_lr(double v) {
    min_lr_ = {v};
    return *this;
  }
  ReduceLROnPlateauOptions& min_lr(std::vector<double> v) {
    min_lr_ = std::move(v);
    return *this;
  }
  const std::vector<double>& min_lr() const { return min_lr_; }

 private:
  std::vector<double> min_lr_{0.0};
};

// Reduces the lr by `factor` when a metric has stopped improving for
// `patience` epochs. Not an LRScheduler (as in PyTorch): step() takes the
// metric and there is no initial step.
class ReduceLROnPlateau {
 public:
  using Options = ReduceLROnPlateauOptions;
  explicit ReduceLROnPlateau(Optimizer& optimizer, const Options& options = Options());
  ReduceLROnPlateau(const ReduceLROnPlateau&) = delete;
  ReduceLROnPlateau& operator=(const ReduceLROnPlateau&) = delete;

  void step(double metric);
  // The groups' lr after the last step (their lr at construction before any).
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  int64_t last_epoch() const { return last_epoch_; }
  double best() const { return best_; }
  int64_t num_bad_epochs() const { return num_bad_epochs_; }
  bool in_cooldown() const { return cooldown_counter_ > 0; }

  StateDict state_dict() const;
  void load_state_dict(const StateDict& state);

 private:
  bool is_better(double a, double best) const;
  void reduce_lr();
  void visit_fields(FieldVisitor& visitor);

  Optimizer& optimizer_;
  Options::Mode mode_;
  double factor_;
  int64_t patience_;
  double threshold_;
  Options::ThresholdMode threshold_mode_;
  int64_t cooldown_;
  std::vector<double> min_lrs_;
  double eps_;
  int64_t cooldown_counter_ = 0;
  int64_t num_bad_epochs_ = 0;
  int64_t last_epoch_ = 0;
  double best_;
  std::vector<double> last_lr_;
};

}  // namespace rnnkit::optim
