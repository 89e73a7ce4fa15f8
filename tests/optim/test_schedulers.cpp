// Live parity of rnnkit::optim's LR schedulers with torch.optim.lr_scheduler:
// random configurations, two parameter groups with different lr, the lr of
// every group after construction and after each of 100 steps (and the cycled
// momentum or beta1 for OneCycleLR); ReduceLROnPlateau is driven by one random
// metric sequence sent to both. Also PyTorch's error messages and an exact
// state round trip for every scheduler.
#include <gtest/gtest.h>

#include <functional>
#include <memory>

#include "rnnkit/optim/optim.h"
#include "support/oracle.h"

using namespace rnnkit;
using namespace rnnkit::optim;
using nlohmann::json;
using rnnkit::testing::oracle;

namespace {

constexpr int kSteps = 100;
constexpr double kTol = 1e-12;

double uniform(Generator& g, double lo, double hi) { return lo + (hi - lo) * g.next_double(); }
int64_t rnd(Generator& g, int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(g.next_below(hi - lo + 1)); }

// One optimizer of kind `optimizer` ("SGD" with momentum, or "Adam") with one
// parameter per group, group g starting at lrs[g].
struct OptimizerSetup {
  std::vector<Tensor> params;
  std::unique_ptr<Optimizer> opt;
};

OptimizerSetup make_setup(const std::string& optimizer, const std::vector<double>& lrs) {
  OptimizerSetup s;
  std::vector<OptimizerParamGroup> groups;
  for (double lr : lrs) {
    s.params.push_back(zeros({3}).requires_grad_());
    if (optimizer == "SGD")
      groups.emplace_back(std::vector<Tensor>{s.params.back()}, SGDOptions(lr).momentum(0.9));
    else if (optimizer == "Adam")
      groups.emplace_back(std::vector<Tensor>{s.params.back()}, AdamOptions(lr));
    else
      groups.emplace_back(std::vector<Tensor>{s.params.back()}, AdagradOptions(lr));
  }
  if (optimizer == "SGD")
    s.opt = std::make_unique<SGD>(groups, SGDOptions(0.1).momentum(0.9));
  else if (optimizer == "Adam")
    s.opt = std::make_unique<Adam>(groups, AdamOptions());
  else
    s.opt = std::make_unique<Adagrad>(groups, AdagradOptions());
  return s;
}

json optimizer_defaults(const std::string& optimizer) {
  return optimizer == "SGD" ? json{{"lr", 0.1}, {"momentum", 0.9}} : json::object();
}

double momentum_of(const OptimizerParamGroup& g) {
  return g.options().has("betas.0") ? g.options().get("betas.0") : g.options().get("momentum");
}

// A scheduler configuration: PyTorch's class and kwargs, and the same built in C++.
struct Config {
  std::string name;
  json kwargs;
  std::function<std::unique_ptr<LRScheduler>(Optimizer&)> make;
};

std::vector<Config> random_configs(const std::string& kind, Generator& g, int groups) {
  std::vector<Config> out;
  for (int rep = 0; rep < 6; ++rep) {
    if (kind == "StepLR") {
      const int64_t step_size = rnd(g, 1, 15);
      const double gamma = uniform(g, 0.1, 0.99);
      out.push_back({kind, {{"step_size", step_size}, {"gamma", gamma}}, [=](Optimizer& o) {
                       return std::make_unique<StepLR>(o, step_size, gamma);
                     }});
    } else if (kind == "MultiStepLR") {
      std::vector<int64_t> milestones;
      for (int64_t i = 0, n = rnd(g, 2, 6); i < n; ++i) milestones.push_back(rnd(g, 1, 99));
      milestones.push_back(milestones[0]);  // a repeated milestone multiplies by gamma twice
      const double gamma = uniform(g, 0.2, 0.9);
      out.push_back({kind, {{"milestones", milestones}, {"gamma", gamma}}, [=](Optimizer& o) {
                       return std::make_unique<MultiStepLR>(o, milestones, gamma);
                     }});
    } else if (kind == "ExponentialLR") {
      const double gamma = uniform(g, 0.9, 0.999);
      out.push_back(
          {kind, {{"gamma", gamma}}, [=](Optimizer& o) { return std::make_unique<ExponentialLR>(o, gamma); }});
    } else if (kind == "CosineAnnealingLR") {
      const int64_t T_max = rnd(g, 3, 60);
      const double eta_min = g.next_below(2) ? 0.0 : uniform(g, 1e-5, 1e-3);
      out.push_back({kind, {{"T_max", T_max}, {"eta_min", eta_min}}, [=](Optimizer& o) {
                       return std::make_unique<CosineAnnealingLR>(o, T_max, eta_min);
                     }});
    } else if (kind == "LinearLR") {
      const double start = uniform(g, 0.05, 1.0), end = uniform(g, 0.0, 1.0);
      const int64_t total_iters = rnd(g, 1, 60);
      out.push_back({kind,
                     {{"start_factor", start}, {"end_factor", end}, {"total_iters", total_iters}},
                     [=](Optimizer& o) { return std::make_unique<LinearLR>(o, start, end, total_iters); }});
    } else if (kind == "OneCycleLR") {
      std::vector<double> max_lr;
      for (int i = 0; i < groups; ++i) max_lr.push_back(uniform(g, 0.01, 1.0));
      const bool by_epochs = g.next_below(3) == 0;
      const int64_t total = rnd(g, kSteps, kSteps + 30);
      const int64_t epochs = rnd(g, 10, 20), per_epoch = (kSteps + epochs - 1) / epochs + rnd(g, 0, 2);
      const double pct = uniform(g, 0.05, 0.5), div = uniform(g, 5, 50), final_div = uniform(g, 1e2, 1e5);
      const bool cos = g.next_below(2), three = g.next_below(2), cycle = g.next_below(4) != 0;
      const double base_m = uniform(g, 0.7, 0.85), max_m = uniform(g, 0.86, 0.98);
      json kw = {{"max_lr", max_lr},
                 {"pct_start", pct},
                 {"anneal_strategy", cos ? "cos" : "linear"},
                 {"div_factor", div},
                 {"final_div_factor", final_div},
                 {"three_phase", three},
                 {"cycle_momentum", cycle},
                 {"base_momentum", base_m},
                 {"max_momentum", max_m}};
      if (by_epochs) {
        kw["epochs"] = epochs;
        kw["steps_per_epoch"] = per_epoch;
      } else {
        kw["total_steps"] = total;
      }
      out.push_back({kind, kw, [=](Optimizer& o) {
                       OneCycleLROptions opts(max_lr);
                       if (by_epochs)
                         opts.epochs(epochs).steps_per_epoch(per_epoch);
                       else
                         opts.total_steps(total);
                       opts.pct_start(pct)
                           .anneal_strategy(cos ? AnnealStrategy::Cos : AnnealStrategy::Linear)
                           .div_factor(div)
                           .final_div_factor(final_div)
                           .three_phase(three)
                           .cycle_momentum(cycle)
                           .base_momentum(base_m)
                           .max_momentum(max_m);
                       return std::make_unique<OneCycleLR>(o, opts);
                     }});
    }
  }
  return out;
}

struct Trace {
  std::vector<double> lr, momentum;  // [steps + 1, groups], row-major
};

void record(Trace& t, const Optimizer& opt, bool momentum) {
  for (const auto& g : opt.param_groups()) {
    t.lr.push_back(g.options().get_lr());
    if (momentum) t.momentum.push_back(momentum_of(g));
  }
}

Tensor as_tensor(const std::vector<double>& v, int groups) {
  return from_vector(v, {static_cast<int64_t>(v.size()) / groups, groups});
}

void expect_traces_match(const Trace& mine, const StateDict& ref, int groups, bool momentum, const std::string& label) {
  EXPECT_CLOSE(as_tensor(mine.lr, groups), ref.at("lr"), kTol, label + " lr");
  // Every value, relative to itself (lrs shrink to 1e-7 and below).
  const std::vector<double> want = ref.at("lr").to_vector<double>();
  ASSERT_EQ(want.size(), mine.lr.size());
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(mine.lr[i], want[i], kTol * std::abs(want[i])) << label << " lr at step " << i / groups;
  if (momentum) EXPECT_CLOSE(as_tensor(mine.momentum, groups), ref.at("momentum"), kTol, label + " momentum");
}

class SchedulerParity : public ::testing::TestWithParam<std::string> {};

TEST_P(SchedulerParity, LrSequenceMatchesPyTorch) {
  const std::string kind = GetParam();
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " (rerun with RNNKIT_TEST_SEED)");
  Generator gen(seed);
  const int groups = 2;
  int index = 0;
  for (const Config& c : random_configs(kind, gen, groups)) {
    const std::string optimizer = index++ % 2 ? "Adam" : "SGD";
    SCOPED_TRACE(kind + " on " + optimizer + " " + c.kwargs.dump());
    const std::vector<double> lrs = {uniform(gen, 0.01, 1.0), uniform(gen, 1e-4, 0.01)};
    const bool momentum = kind == "OneCycleLR";
    json cfg = {{"optimizer", optimizer},
                {"defaults", optimizer_defaults(optimizer)},
                {"lrs", lrs},
                {"schedulers", {{{"name", c.name}, {"kwargs", c.kwargs}}}},
                {"steps", kSteps},
                {"momentum", momentum}};
    StateDict ref = oracle().call("sched_run", cfg, {});

    OptimizerSetup s = make_setup(optimizer, lrs);
    auto sched = c.make(*s.opt);
    Trace t;
    record(t, *s.opt, momentum);
    EXPECT_EQ(sched->get_last_lr(), std::vector<double>(t.lr.begin(), t.lr.end()));
    for (int step = 0; step < kSteps; ++step) {
      s.opt->step();
      sched->step();
      record(t, *s.opt, momentum);
    }
    EXPECT_EQ(sched->last_epoch(), kSteps);
    expect_traces_match(t, ref, groups, momentum, kind);
  }
}

INSTANTIATE_TEST_SUITE_P(All, SchedulerParity,
                         ::testing::Values("StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR",
                                           "OneCycleLR"),
                         [](const auto& info) { return info.param; });

TEST(SchedulerChain, ChainedSchedulersShareInitialLr) {
  // The second scheduler's base_lrs are the first one's initial_lr, as in PyTorch.
  const std::vector<double> lrs = {0.5, 0.05};
  json cfg = {{"optimizer", "SGD"},
              {"defaults", optimizer_defaults("SGD")},
              {"lrs", lrs},
              {"schedulers",
               {{{"name", "LinearLR"}, {"kwargs", {{"start_factor", 0.25}, {"total_iters", 10}}}},
                {{"name", "CosineAnnealingLR"}, {"kwargs", {{"T_max", 17}, {"eta_min", 1e-3}}}},
                {{"name", "StepLR"}, {"kwargs", {{"step_size", 9}, {"gamma", 0.7}}}}}},
              {"steps", kSteps}};
  StateDict ref = oracle().call("sched_run", cfg, {});
  OptimizerSetup s = make_setup("SGD", lrs);
  LinearLR a(*s.opt, 0.25, 1.0, 10);
  CosineAnnealingLR b(*s.opt, 17, 1e-3);
  StepLR c(*s.opt, 9, 0.7);
  EXPECT_EQ(b.base_lrs(), lrs);
  Trace t;
  record(t, *s.opt, false);
  for (int step = 0; step < kSteps; ++step) {
    a.step();
    b.step();
    c.step();
    record(t, *s.opt, false);
  }
  expect_traces_match(t, ref, 2, false, "chained");
}

TEST(ReduceLROnPlateauParity, FollowsTheMetric) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " (rerun with RNNKIT_TEST_SEED)");
  Generator gen(seed);
  int reductions = 0;  // the metric sequences must make the scheduler act
  for (int rep = 0; rep < 12; ++rep) {
    const bool max_mode = gen.next_below(2), abs_mode = gen.next_below(2);
    const double factor = uniform(gen, 0.1, 0.9), threshold = abs_mode ? uniform(gen, 0, 0.05) : uniform(gen, 0, 0.02);
    const int64_t patience = rnd(gen, 0, 5), cooldown = rnd(gen, 0, 3);
    const double eps = gen.next_below(2) ? 1e-8 : 1e-3;
    const bool per_group_min = gen.next_below(2);
    const std::vector<double> lrs = {uniform(gen, 0.05, 1.0), uniform(gen, 0.01, 0.1)};
    const std::vector<double> min_lrs = {uniform(gen, 0, 1e-2), uniform(gen, 0, 1e-3)};
    // A noisy trend: mostly improving at first, then flat, with occasional spikes.
    std::vector<double> metrics;
    double m = uniform(gen, 1, 10);
    for (int s = 0; s < kSteps; ++s) {
      const double drift = s < 40 ? -0.02 : 0.0;
      m *= 1 + drift + 0.03 * (gen.next_double() - 0.5);
      metrics.push_back(gen.next_below(15) == 0 ? m * 3 : max_mode ? 1 / m : m);
    }
    json kw = {{"mode", max_mode ? "max" : "min"},
               {"factor", factor},
               {"patience", patience},
               {"threshold", threshold},
               {"threshold_mode", abs_mode ? "abs" : "rel"},
               {"cooldown", cooldown},
               {"eps", eps}};
    if (per_group_min)
      kw["min_lr"] = min_lrs;
    else
      kw["min_lr"] = min_lrs[0];
    SCOPED_TRACE(kw.dump());
    json cfg = {{"optimizer", "Adam"},
                {"lrs", lrs},
                {"schedulers", {{{"name", "ReduceLROnPlateau"}, {"kwargs", kw}}}},
                {"steps", kSteps}};
    StateDict inputs;
    inputs.insert("metrics", from_vector(metrics));
    StateDict ref = oracle().call("sched_run", cfg, inputs);

    OptimizerSetup s = make_setup("Adam", lrs);
    ReduceLROnPlateauOptions opts;
    opts.mode(max_mode ? ReduceLROnPlateauOptions::Mode::Max : ReduceLROnPlateauOptions::Mode::Min)
        .factor(factor)
        .patience(patience)
        .threshold(threshold)
        .threshold_mode(abs_mode ? ReduceLROnPlateauOptions::ThresholdMode::Abs
                                 : ReduceLROnPlateauOptions::ThresholdMode::Rel)
        .cooldown(cooldown)
        .eps(eps);
    if (per_group_min)
      opts.min_lr(min_lrs);
    else
      opts.min_lr(min_lrs[0]);
    ReduceLROnPlateau sched(*s.opt, opts);
    Trace t;
    record(t, *s.opt, false);
    for (int step = 0; step < kSteps; ++step) {
      sched.step(metrics[step]);
      record(t, *s.opt, false);
      reductions += t.lr[t.lr.size() - 2] != t.lr[t.lr.size() - 4];
    }
    expect_traces_match(t, ref, 2, false, "ReduceLROnPlateau");
  }
  EXPECT_GT(reductions, 12);
}

// ---------------------------------------------------------------- errors

void expect_same_error(const json& cfg, const std::function<void()>& ours_fn) {
  SCOPED_TRACE(cfg.dump());
  std::string ours, theirs;
  try {
    ours_fn();
  } catch (const Error& e) {
    ours = e.what();
  }
  try {
    oracle().call("sched_construct", cfg, {});
  } catch (const Error& e) {
    theirs = e.what();
  }
  ASSERT_FALSE(ours.empty()) << "rnnkit raised nothing";
  ASSERT_FALSE(theirs.empty()) << "PyTorch raised nothing";
  EXPECT_NE(theirs.find("Error: " + ours + "\n"), std::string::npos) << "rnnkit: " << ours << "\nPyTorch: " << theirs;
}

TEST(SchedulerErrors, MessagesMatchPyTorch) {
  auto cfg = [](const std::string& optimizer, const std::string& name, json kwargs, int steps = 0) {
    return json{{"optimizer", optimizer},
                {"defaults", optimizer_defaults(optimizer)},
                {"scheduler", {{"name", name}, {"kwargs", kwargs}}},
                {"steps", steps}};
  };
  expect_same_error(cfg("SGD", "OneCycleLR", {{"max_lr", 0.1}, {"total_steps", 0}}), [] {
    OptimizerSetup s = make_setup("SGD", {0.1});
    OneCycleLR(*s.opt, OneCycleLROptions(0.1).total_steps(0));
  });
  expect_same_error(cfg("SGD", "OneCycleLR", {{"max_lr", 0.1}}), [] {
    OptimizerSetup s = make_setup("SGD", {0.1});
    OneCycleLR(*s.opt, OneCycleLROptions(0.1));
  });
  expect_same_error(cfg("SGD", "OneCycleLR", {{"max_lr", 0.1}, {"epochs", -2}, {"steps_per_epoch", 5}}), [] {
    OptimizerSetup s = make_setup("SGD", {0.1});
    OneCycleLR(*s.opt, OneCycleLROptions(0.1).epochs(-2).steps_per_epoch(5));
  });
  expect_same_error(cfg("SGD", "OneCycleLR", {{"max_lr", 0.1}, {"total_steps", 10}, {"pct_start", 1.5}}), [] {
    OptimizerSetup s = make_setup("SGD", {0.1});
    OneCycleLR(*s.opt, OneCycleLROptions(0.1).total_steps(10).pct_start(1.5));
  });
  expect_same_error(cfg("SGD", "OneCycleLR", {{"max_lr", {0.1, 0.2}}, {"total_steps", 10}}), [] {
    OptimizerSetup s = make_setup("SGD", {0.1});
    OneCycleLR(*s.opt, OneCycleLROptions({0.1, 0.2}).total_steps(10));
  });
  expect_same_error(cfg("Adagrad", "OneCycleLR", {{"max_lr", 0.1}, {"total_steps", 10}}), [] {
    OptimizerSetup s = make_setup("Adagrad", {0.1});
    OneCycleLR(*s.opt, OneCycleLROptions(0.1).total_steps(10));
  });
  expect_same_error(cfg("SGD", "OneCycleLR", {{"max_lr", 0.1}, {"total_steps", 10}}, 11), [] {
    OptimizerSetup s = make_setup("SGD", {0.1});
    OneCycleLR sched(*s.opt, OneCycleLROptions(0.1).total_steps(10));
    for (int i = 0; i < 11; ++i) sched.step();
  });
  expect_same_error(cfg("SGD", "LinearLR", {{"start_factor", 1.5}}), [] {
    OptimizerSetup s = make_setup("SGD", {0.1});
    LinearLR(*s.opt, 1.5);
  });
  expect_same_error(cfg("SGD", "LinearLR", {{"end_factor", -0.5}}), [] {
    OptimizerSetup s = make_setup("SGD", {0.1});
    LinearLR(*s.opt, 0.5, -0.5);
  });
  expect_same_error(cfg("SGD", "ReduceLROnPlateau", {{"factor", 1.0}}), [] {
    OptimizerSetup s = make_setup("SGD", {0.1});
    ReduceLROnPlateau(*s.opt, ReduceLROnPlateauOptions().factor(1.0));
  });
  expect_same_error(cfg("SGD", "ReduceLROnPlateau", {{"min_lr", {0.1, 0.2}}}), [] {
    OptimizerSetup s = make_setup("SGD", {0.1});
    ReduceLROnPlateau(*s.opt, ReduceLROnPlateauOptions().min_lr({0.1, 0.2}));
  });

  // A failed step leaves the scheduler where it was.
  OptimizerSetup s = make_setup("SGD", {0.1});
  OneCycleLR sched(*s.opt, OneCycleLROptions(0.1).total_steps(3));
  for (int i = 0; i < 3; ++i) sched.step();
  EXPECT_THROW(sched.step(), Error);
  EXPECT_EQ(sched.last_epoch(), 3);
}

// ---------------------------------------------------------------- state round trip

TEST(SchedulerState, RoundTripThroughSafetensorsIsExact) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " (rerun with RNNKIT_TEST_SEED)");
  Generator gen(seed);
  const std::vector<double> lrs = {0.3, 0.02};
  const int n = 37;
  for (const std::string kind :
       {"StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "OneCycleLR"}) {
    for (const Config& c : random_configs(kind, gen, 2)) {
      SCOPED_TRACE(kind + " " + c.kwargs.dump());
      for (const std::string optimizer : {"SGD", "Adam"}) {
        OptimizerSetup straight = make_setup(optimizer, lrs);
        auto a = c.make(*straight.opt);
        for (int i = 0; i < 2 * n; ++i) a->step();

        OptimizerSetup first = make_setup(optimizer, lrs);
        auto b = c.make(*first.opt);
        for (int i = 0; i < n; ++i) b->step();
        StateDict sd;
        for (const auto& [k, v] : first.opt->state_dict()) sd.insert("optimizer." + k, v);
        for (const auto& [k, v] : b->state_dict()) sd.insert("scheduler." + k, v);
        const StateDict loaded = io::from_safetensors_bytes(io::to_safetensors_bytes(sd), "bytes").tensors;
        StateDict opt_sd, sched_sd;
        for (const auto& [k, v] : loaded) (k.rfind("optimizer.", 0) == 0 ? opt_sd : sched_sd).insert(k.substr(10), v);

        OptimizerSetup resumed = make_setup(optimizer, {0.7, 0.9});
        auto r = c.make(*resumed.opt);
        resumed.opt->load_state_dict(opt_sd);
        r->load_state_dict(sched_sd);
        for (int i = 0; i < n; ++i) r->step();
        EXPECT_EQ(r->get_last_lr(), a->get_last_lr());
        EXPECT_EQ(r->last_epoch(), a->last_epoch());
        for (size_t g = 0; g < 2; ++g)
          EXPECT_EQ(momentum_of(resumed.opt->param_groups()[g]), momentum_of(straight.opt->param_groups()[g]));
      }
    }
  }

  // ReduceLROnPlateau, and a state with a key missing or one too many.
  OptimizerSetup straight = make_setup("SGD", lrs), first = make_setup("SGD", lrs), resumed = make_setup("SGD", lrs);
  const auto opts = ReduceLROnPlateauOptions().patience(2).cooldown(1).factor(0.5);
  ReduceLROnPlateau a(*straight.opt, opts), b(*first.opt, opts), r(*resumed.opt, opts);
  std::vector<double> metrics;
  for (int i = 0; i < 2 * n; ++i) metrics.push_back(gen.next_below(4) == 0 ? 1.0 / (i + 1) : 5.0);
  for (int i = 0; i < 2 * n; ++i) a.step(metrics[i]);
  for (int i = 0; i < n; ++i) b.step(metrics[i]);
  const StateDict state = io::from_safetensors_bytes(io::to_safetensors_bytes(b.state_dict()), "bytes").tensors;
  resumed.opt->load_state_dict(first.opt->state_dict());
  StateDict missing = state;
  missing.erase("best");
  EXPECT_THROW(r.load_state_dict(missing), Error);
  StateDict extra = state;
  extra.insert("bogus", scalar_tensor(1.0, kFloat64));
  try {
    r.load_state_dict(extra);
    ADD_FAILURE() << "accepted an unexpected key";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bogus"), std::string::npos) << e.what();
  }
  r.load_state_dict(state);
  for (int i = n; i < 2 * n; ++i) r.step(metrics[i]);
  EXPECT_EQ(r.get_last_lr(), a.get_last_lr());
  EXPECT_EQ(r.best(), a.best());
  EXPECT_EQ(r.num_bad_epochs(), a.num_bad_epochs());
}

}  // namespace
