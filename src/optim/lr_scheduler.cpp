#include "rnnkit/optim/lr_scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "optim/field_io.h"
#include "util/python_repr.h"

// Python rounds every operation: a*b+c must not become one fused
// multiply-add (GCC contracts in C++ whenever the target has FMA).
#if defined(__clang__)
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif

namespace rnnkit::optim {

using util::py_float;

namespace {

constexpr double kPi = 3.141592653589793;  // Python's math.pi

// "<name>.<g>" for each group's value.
void visit_per_group(FieldVisitor& v, const std::string& name, std::vector<double>& values) {
  for (size_t g = 0; g < values.size(); ++g) v(name + "." + std::to_string(g), values[g]);
}

// One value for every group (a single value is repeated), PyTorch's _format_param.
std::vector<double> per_group(const std::vector<double>& values, size_t groups, const std::string& what) {
  if (values.size() == 1) return std::vector<double>(groups, values[0]);
  RNNKIT_CHECK(values.size() == groups, "expected ", groups, " values for ", what, ", got ", values.size());
  return values;
}

}  // namespace

// ---------------------------------------------------------------- LRScheduler

LRScheduler::LRScheduler(std::string name, Optimizer& optimizer) : optimizer_(optimizer), name_(std::move(name)) {
  for (auto& group : optimizer_.param_groups()) {
    if (!group.initial_lr()) group.set_initial_lr(group.options().get_lr());
    base_lrs_.push_back(*group.initial_lr());
  }
}

void LRScheduler::initial_step() {
  step_count_ = 0;
  step();
}

std::vector<double> LRScheduler::group_lrs() const {
  std::vector<double> lrs;
  for (const auto& group : optimizer_.param_groups()) lrs.push_back(group.options().get_lr());
  return lrs;
}

void LRScheduler::step() {
  ++step_count_;
  ++last_epoch_;
  std::vector<double> lrs;
  try {
    lrs = get_lr();
  } catch (...) {
    --step_count_;
    --last_epoch_;
    throw;
  }
  auto& groups = optimizer_.param_groups();
  const size_t n = std::min(lrs.size(), groups.size());
  for (size_t g = 0; g < n; ++g) groups[g].options().set_lr(lrs[g]);
  last_lr_ = group_lrs();
}

void LRScheduler::visit_all(FieldVisitor& v) {
  v("last_epoch", last_epoch_);
  v("step_count", step_count_);
  visit_per_group(v, "base_lrs", base_lrs_);
  last_lr_.resize(base_lrs_.size());
  visit_per_group(v, "last_lr", last_lr_);
  visit_fields(v);
}

StateDict LRScheduler::state_dict() const {
  StateDict out;
  detail::FieldWriter writer(out, "");
  const_cast<LRScheduler*>(this)->visit_all(writer);  // the writer only reads
  return out;
}

void LRScheduler::load_state_dict(const StateDict& state) {
  std::set<std::string> used;
  detail::FieldReader check(state, "", name_, /*apply=*/false, &used);
  visit_all(check);
  detail::check_no_unexpected_keys(state, used, "", name_);
  detail::FieldReader reader(state, "", name_, /*apply=*/true, nullptr);
  visit_all(reader);
  after_load();
}

// ---------------------------------------------------------------- StepLR

namespace {
const char* checked_step_lr(int64_t step_size) {
  RNNKIT_CHECK(step_size > 0, "StepLR: step_size must be positive, got ", step_size);
  return "StepLR";
}
}  // namespace

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(checked_step_lr(step_size), optimizer), step_size_(step_size), gamma_(gamma) {
  initial_step();
}

std::vector<double> StepLR::get_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0 || last_epoch_ % step_size_ != 0) return lrs;
  for (double& lr : lrs) lr = lr * gamma_;
  return lrs;
}

void StepLR::visit_fields(FieldVisitor& v) {
  v("step_size", step_size_);
  v("gamma", gamma_);
}

// ---------------------------------------------------------------- MultiStepLR

MultiStepLR::MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma)
    : LRScheduler("MultiStepLR", optimizer), milestones_(std::move(milestones)), gamma_(gamma) {
  std::sort(milestones_.begin(), milestones_.end());
  initial_step();
}

std::vector<double> MultiStepLR::get_lr() {
  std::vector<double> lrs = group_lrs();
  const auto hits = std::count(milestones_.begin(), milestones_.end(), last_epoch_);
  if (hits == 0) return lrs;
  for (double& lr : lrs) lr = lr * std::pow(gamma_, static_cast<double>(hits));
  return lrs;
}

void MultiStepLR::visit_fields(FieldVisitor& v) {
  v("milestones", milestones_);
  v("gamma", gamma_);
}

// ---------------------------------------------------------------- ExponentialLR

ExponentialLR::ExponentialLR(Optimizer& optimizer, double gamma)
    : LRScheduler("ExponentialLR", optimizer), gamma_(gamma) {
  initial_step();
}

std::vector<double> ExponentialLR::get_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0) return lrs;
  for (double& lr : lrs) lr = lr * gamma_;
  return lrs;
}

void ExponentialLR::visit_fields(FieldVisitor& v) { v("gamma", gamma_); }

// ---------------------------------------------------------------- CosineAnnealingLR

namespace {
const char* checked_cosine(int64_t T_max) {
  RNNKIT_CHECK(T_max > 0, "CosineAnnealingLR: T_max must be positive, got ", T_max);
  return "CosineAnnealingLR";
}
}  // namespace

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min)
    : LRScheduler(checked_cosine(T_max), optimizer), T_max_(T_max), eta_min_(eta_min) {
  initial_step();
}

std::vector<double> CosineAnnealingLR::get_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0) return lrs;
  const double T = static_cast<double>(T_max_);
  const double e = static_cast<double>(last_epoch_);
  // Python's (last_epoch - 1 - T_max) % (2 * T_max) == 0; the sign of % does not matter for == 0.
  if ((last_epoch_ - 1 - T_max_) % (2 * T_max_) == 0) {
    for (size_t g = 0; g < lrs.size(); ++g) lrs[g] = lrs[g] + (base_lrs_[g] - eta_min_) * (1 - std::cos(kPi / T)) / 2;
    return lrs;
  }
  for (double& lr : lrs)
    lr = (1 + std::cos(kPi * e / T)) / (1 + std::cos(kPi * (e - 1) / T)) * (lr - eta_min_) + eta_min_;
  return lrs;
}

void CosineAnnealingLR::visit_fields(FieldVisitor& v) {
  v("T_max", T_max_);
  v("eta_min", eta_min_);
}

// ---------------------------------------------------------------- LinearLR

namespace {
const char* checked_linear(double start_factor, double end_factor) {
  RNNKIT_CHECK(!(start_factor > 1.0 || start_factor < 0),
               "Starting multiplicative factor expected to be between 0 and 1.");
  RNNKIT_CHECK(!(end_factor > 1.0 || end_factor < 0), "Ending multiplicative factor expected to be between 0 and 1.");
  return "LinearLR";
}
}  // namespace

LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor, int64_t total_iters)
    : LRScheduler(checked_linear(start_factor, end_factor), optimizer),
      start_factor_(start_factor),
      end_factor_(end_factor),
      total_iters_(total_iters) {
  initial_step();
}

std::vector<double> LinearLR::get_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0) {
    for (double& lr : lrs) lr = lr * start_factor_;
    return lrs;
  }
  if (last_epoch_ > total_iters_) return lrs;
  const double denominator = static_cast<double>(total_iters_) * start_factor_ +
                             static_cast<double>(last_epoch_ - 1) * (end_factor_ - start_factor_);
  RNNKIT_CHECK(denominator != 0, "LinearLR: float division by zero (start_factor is 0)");
  for (double& lr : lrs) lr = lr * (1. + (end_factor_ - start_factor_) / denominator);
  return lrs;
}

void LinearLR::visit_fields(FieldVisitor& v) {
  v("start_factor", start_factor_);
  v("end_factor", end_factor_);
  v("total_iters", total_iters_);
}

// ---------------------------------------------------------------- OneCycleLR

namespace {

int64_t checked_total_steps(const OneCycleLROptions& o) {
  auto show = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("None"); };
  if (o.total_steps()) {
    RNNKIT_CHECK(*o.total_steps() > 0, "Expected positive integer total_steps, but got ", *o.total_steps());
    return *o.total_steps();
  }
  RNNKIT_CHECK(o.epochs() || o.steps_per_epoch(), "You must define either total_steps OR (epochs AND steps_per_epoch)");
  RNNKIT_CHECK(o.epochs() && *o.epochs() > 0, "Expected positive integer epochs, but got ", show(o.epochs()));
  RNNKIT_CHECK(o.steps_per_epoch() && *o.steps_per_epoch() > 0, "Expected positive integer steps_per_epoch, but got ",
               show(o.steps_per_epoch()));
  return *o.epochs() * *o.steps_per_epoch();
}

const char* checked_one_cycle(const OneCycleLROptions& o, const Optimizer& optimizer) {
  checked_total_steps(o);
  RNNKIT_CHECK(!(o.pct_start() < 0 || o.pct_start() > 1), "Expected float between 0 and 1 pct_start, but got ",
               py_float(o.pct_start()));
  const size_t groups = optimizer.param_groups().size();
  per_group(o.max_lr(), groups, "max_lr");
  if (o.cycle_momentum()) {
    RNNKIT_CHECK(optimizer.defaults().has("momentum") || optimizer.defaults().has("betas.0"),
                 "optimizer must support momentum with `cycle_momentum` option enabled");
    per_group(o.max_momentum(), groups, "max_momentum");
    per_group(o.base_momentum(), groups, "base_momentum");
  }
  return "OneCycleLR";
}

}  // namespace

OneCycleLR::OneCycleLR(Optimizer& optimizer, const OneCycleLROptions& o)
    : LRScheduler(checked_one_cycle(o, optimizer), optimizer),
      total_steps_(checked_total_steps(o)),
      pct_start_(o.pct_start()),
      anneal_strategy_(o.anneal_strategy()),
      cycle_momentum_(o.cycle_momentum()),
      three_phase_(o.three_phase()) {
  auto& groups = optimizer_.param_groups();
  max_lrs_ = per_group(o.max_lr(), groups.size(), "max_lr");
  for (size_t g = 0; g < groups.size(); ++g) {
    const double initial_lr = max_lrs_[g] / o.div_factor();
    groups[g].set_initial_lr(initial_lr);
    base_lrs_[g] = initial_lr;
    min_lrs_.push_back(initial_lr / o.final_div_factor());
  }
  if (cycle_momentum_) {
    use_beta1_ = optimizer_.defaults().has("betas.0");
    max_momentums_ = per_group(o.max_momentum(), groups.size(), "max_momentum");
    base_momentums_ = per_group(o.base_momentum(), groups.size(), "base_momentum");
    for (size_t g = 0; g < groups.size(); ++g)
      groups[g].options().set(use_beta1_ ? "betas.0" : "momentum", max_momentums_[g]);
  }
  build_phases();
  initial_step();
}

void OneCycleLR::build_phases() {
  const double total = static_cast<double>(total_steps_);
  if (three_phase_) {
    phases_ = {{pct_start_ * total - 1, Point::Initial, Point::Max, Point::Max, Point::Min},
               {2 * pct_start_ * total - 2, Point::Max, Point::Initial, Point::Min, Point::Max},
               {total - 1, Point::Initial, Point::Min, Point::Max, Point::Max}};
  } else {
    phases_ = {{pct_start_ * total - 1, Point::Initial, Point::Max, Point::Max, Point::Min},
               {total - 1, Point::Max, Point::Min, Point::Min, Point::Max}};
  }
}

double OneCycleLR::anneal(double start, double end, double pct) const {
  if (anneal_strategy_ == AnnealStrategy::Cos) {
    const double cos_out = std::cos(kPi * pct) + 1;
    return end + (start - end) / 2.0 * cos_out;
  }
  return (end - start) * pct + start;
}

std::vector<double> OneCycleLR::get_lr() {
  const int64_t step_num = last_epoch_;
  RNNKIT_CHECK(step_num <= total_steps_, "Tried to step ", step_num + 1,
               " times. The specified number of total steps is ", total_steps_);
  auto& groups = optimizer_.param_groups();
  std::vector<double> lrs;
  for (size_t g = 0; g < groups.size(); ++g) {
    auto lr_at = [&](Point p) {
      return p == Point::Initial ? base_lrs_[g] : p == Point::Max ? max_lrs_[g] : min_lrs_[g];
    };
    auto momentum_at = [&](Point p) { return p == Point::Max ? max_momentums_[g] : base_momentums_[g]; };
    double start_step = 0, lr = 0, momentum = 0;
    for (size_t i = 0; i < phases_.size(); ++i) {
      const Phase& phase = phases_[i];
      if (static_cast<double>(step_num) <= phase.end_step || i + 1 == phases_.size()) {
        const double pct = (static_cast<double>(step_num) - start_step) / (phase.end_step - start_step);
        lr = anneal(lr_at(phase.start_lr), lr_at(phase.end_lr), pct);
        if (cycle_momentum_) momentum = anneal(momentum_at(phase.start_momentum), momentum_at(phase.end_momentum), pct);
        break;
      }
      start_step = phase.end_step;
    }
    lrs.push_back(lr);
    if (cycle_momentum_) groups[g].options().set(use_beta1_ ? "betas.0" : "momentum", momentum);
  }
  return lrs;
}

void OneCycleLR::visit_fields(FieldVisitor& v) {
  v("total_steps", total_steps_);
  v("pct_start", pct_start_);
  int64_t strategy = anneal_strategy_ == AnnealStrategy::Cos ? 0 : 1;
  v("anneal_strategy", strategy);
  anneal_strategy_ = strategy == 0 ? AnnealStrategy::Cos : AnnealStrategy::Linear;
  v("cycle_momentum", cycle_momentum_);
  v("use_beta1", use_beta1_);
  v("three_phase", three_phase_);
  const size_t groups = base_lrs_.size();
  max_lrs_.resize(groups);
  min_lrs_.resize(groups);
  visit_per_group(v, "max_lrs", max_lrs_);
  visit_per_group(v, "min_lrs", min_lrs_);
  if (cycle_momentum_) {
    max_momentums_.resize(groups);
    base_momentums_.resize(groups);
    visit_per_group(v, "max_momentums", max_momentums_);
    visit_per_group(v, "base_momentums", base_momentums_);
  }
}

void OneCycleLR::after_load() { build_phases(); }

// ---------------------------------------------------------------- ReduceLROnPlateau

ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& optimizer, const Options& o)
    : optimizer_(optimizer),
      mode_(o.mode()),
      factor_(o.factor()),
      patience_(o.patience()),
      threshold_(o.threshold()),
      threshold_mode_(o.threshold_mode()),
      cooldown_(o.cooldown()),
      eps_(o.eps()) {
  RNNKIT_CHECK(factor_ < 1.0, "Factor should be < 1.0.");
  const size_t groups = optimizer_.param_groups().size();
  RNNKIT_CHECK(o.min_lr().size() == 1 || o.min_lr().size() == groups, "expected ", groups, " min_lrs, got ",
               o.min_lr().size());
  min_lrs_ = per_group(o.min_lr(), groups, "min_lr");
  best_ =
      mode_ == Options::Mode::Min ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
  for (const auto& group : optimizer_.param_groups()) last_lr_.push_back(group.options().get_lr());
}

bool ReduceLROnPlateau::is_better(double a, double best) const {
  if (mode_ == Options::Mode::Min && threshold_mode_ == Options::ThresholdMode::Rel)
    return a < best * (1. - threshold_);
  if (mode_ == Options::Mode::Min) return a < best - threshold_;
  if (threshold_mode_ == Options::ThresholdMode::Rel) return a > best * (threshold_ + 1.);
  return a > best + threshold_;
}

void ReduceLROnPlateau::reduce_lr() {
  auto& groups = optimizer_.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    const double old_lr = groups[g].options().get_lr();
    const double scaled = old_lr * factor_;
    const double new_lr = min_lrs_[g] > scaled ? min_lrs_[g] : scaled;  // Python's max(scaled, min_lr)
    if (old_lr - new_lr > eps_) groups[g].options().set_lr(new_lr);
  }
}

void ReduceLROnPlateau::step(double metric) {
  last_epoch_ += 1;
  if (is_better(metric, best_)) {
    best_ = metric;
    num_bad_epochs_ = 0;
  } else {
    num_bad_epochs_ += 1;
  }
  if (in_cooldown()) {
    cooldown_counter_ -= 1;
    num_bad_epochs_ = 0;  // bad epochs in cooldown do not count
  }
  if (num_bad_epochs_ > patience_) {
    reduce_lr();
    cooldown_counter_ = cooldown_;
    num_bad_epochs_ = 0;
  }
  last_lr_.clear();
  for (const auto& group : optimizer_.param_groups()) last_lr_.push_back(group.options().get_lr());
}

void ReduceLROnPlateau::visit_fields(FieldVisitor& v) {
  int64_t mode = mode_ == Options::Mode::Min ? 0 : 1;
  v("mode", mode);
  mode_ = mode == 0 ? Options::Mode::Min : Options::Mode::Max;
  v("factor", factor_);
  v("patience", patience_);
  v("threshold", threshold_);
  int64_t threshold_mode = threshold_mode_ == Options::ThresholdMode::Rel ? 0 : 1;
  v("threshold_mode", threshold_mode);
  threshold_mode_ = threshold_mode == 0 ? Options::ThresholdMode::Rel : Options::ThresholdMode::Abs;
  v("cooldown", cooldown_);
  visit_per_group(v, "min_lrs", min_lrs_);
  v("eps", eps_);
  v("cooldown_counter", cooldown_counter_);
  v("num_bad_epochs", num_bad_epochs_);
  v("last_epoch", last_epoch_);
  v("best", best_);
  last_lr_.resize(min_lrs_.size());
  visit_per_group(v, "last_lr", last_lr_);
}

StateDict ReduceLROnPlateau::state_dict() const {
  StateDict out;
  detail::FieldWriter writer(out, "");
  const_cast<ReduceLROnPlateau*>(this)->visit_fields(writer);  // the writer only reads
  return out;
}

void ReduceLROnPlateau::load_state_dict(const StateDict& state) {
  std::set<std::string> used;
  detail::FieldReader check(state, "", "ReduceLROnPlateau", /*apply=*/false, &used);
  visit_fields(check);
  detail::check_no_unexpected_keys(state, used, "", "ReduceLROnPlateau");
  detail::FieldReader reader(state, "", "ReduceLROnPlateau", /*apply=*/true, nullptr);
  visit_fields(reader);
}

}  // namespace rnnkit::optim
