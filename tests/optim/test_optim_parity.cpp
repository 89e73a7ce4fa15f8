// Live parity of rnnkit::optim's optimizers with torch.optim: every optimizer
// with the option combinations that change its arithmetic, float32 and
// float64, two parameter groups with different options, 20 steps of random
// gradients (some parameters skip some steps), parameters compared after
// every step; then the state and the param groups as state_dict names them.
// Also: PyTorch's validation messages, the Optimizer API, and exact training
// resume through safetensors bytes.
#include <gtest/gtest.h>

#include <functional>
#include <memory>

#include "rnnkit/optim/optim.h"
#include "support/oracle.h"

using namespace rnnkit;
using nlohmann::json;
using rnnkit::testing::oracle;

namespace {

constexpr int kSteps = 20;

// Options of optimizer `name` (PyTorch's class name) from defaults plus the
// JSON entries, set through the options' named fields ("betas" -> betas.0/.1).
std::unique_ptr<optim::OptimizerOptions> make_options(const std::string& name, const json& entries,
                                                      const optim::OptimizerOptions* base = nullptr) {
  std::unique_ptr<optim::OptimizerOptions> o;
  if (base) {
    o = base->clone();
  } else if (name == "SGD") {
    o = std::make_unique<optim::SGDOptions>(entries.at("lr").get<double>());
  } else if (name == "Adam") {
    o = std::make_unique<optim::AdamOptions>();
  } else if (name == "AdamW") {
    o = std::make_unique<optim::AdamWOptions>();
  } else if (name == "RMSprop") {
    o = std::make_unique<optim::RMSpropOptions>();
  } else if (name == "Adagrad") {
    o = std::make_unique<optim::AdagradOptions>();
  } else {
    throw Error("unknown optimizer " + name);
  }
  for (const auto& [key, value] : entries.items()) {
    if (key == "betas") {
      o->set("betas.0", value[0].get<double>());
      o->set("betas.1", value[1].get<double>());
    } else {
      o->set(key, value.is_boolean() ? (value.get<bool>() ? 1.0 : 0.0) : value.get<double>());
    }
  }
  return o;
}

std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& name,
                                                 std::vector<optim::OptimizerParamGroup> groups,
                                                 const optim::OptimizerOptions& defaults) {
  if (name == "SGD") return std::make_unique<optim::SGD>(groups, static_cast<const optim::SGDOptions&>(defaults));
  if (name == "Adam") return std::make_unique<optim::Adam>(groups, static_cast<const optim::AdamOptions&>(defaults));
  if (name == "AdamW") return std::make_unique<optim::AdamW>(groups, static_cast<const optim::AdamWOptions&>(defaults));
  if (name == "RMSprop")
    return std::make_unique<optim::RMSprop>(groups, static_cast<const optim::RMSpropOptions&>(defaults));
  if (name == "Adagrad")
    return std::make_unique<optim::Adagrad>(groups, static_cast<const optim::AdagradOptions&>(defaults));
  throw Error("unknown optimizer " + name);
}

struct Spec {
  std::string optimizer;
  std::string label;
  json defaults;  // the optimizer's defaults (group 0 uses them)
  json group1;    // group 1's own options on top of the defaults
};

std::vector<Spec> specs() {
  return {
      {"SGD", "plain", {{"lr", 0.1}}, {{"lr", 0.03}}},
      {"SGD", "weight_decay", {{"lr", 0.1}, {"weight_decay", 1e-2}}, {{"lr", 0.05}, {"weight_decay", 0.0}}},
      {"SGD", "momentum", {{"lr", 0.05}, {"momentum", 0.9}}, {{"lr", 0.02}, {"momentum", 0.5}}},
      {"SGD",
       "momentum_dampening_wd",
       {{"lr", 0.05}, {"momentum", 0.9}, {"dampening", 0.3}, {"weight_decay", 1e-3}},
       {{"lr", 0.1}, {"dampening", 0.0}}},
      {"SGD", "nesterov", {{"lr", 0.05}, {"momentum", 0.8}, {"nesterov", true}}, {{"lr", 0.01}}},
      {"SGD",
       "nesterov_wd_maximize",
       {{"lr", 0.05}, {"momentum", 0.9}, {"nesterov", true}, {"weight_decay", 1e-2}, {"maximize", true}},
       {{"lr", 0.02}, {"maximize", false}}},
      {"Adam", "plain", {{"lr", 1e-2}}, {{"lr", 3e-3}}},
      {"Adam", "weight_decay", {{"lr", 1e-2}, {"weight_decay", 1e-2}}, {{"lr", 5e-3}, {"weight_decay", 0.1}}},
      {"Adam", "amsgrad", {{"lr", 1e-2}, {"amsgrad", true}}, {{"lr", 2e-2}}},
      {"Adam",
       "amsgrad_wd_maximize_betas",
       {{"lr", 1e-2},
        {"amsgrad", true},
        {"weight_decay", 1e-3},
        {"maximize", true},
        {"betas", {0.8, 0.99}},
        {"eps", 1e-6}},
       {{"lr", 4e-3}, {"amsgrad", false}, {"betas", {0.5, 0.9}}}},
      {"AdamW", "plain", {{"lr", 1e-2}}, {{"lr", 3e-3}, {"weight_decay", 0.0}}},
      {"AdamW", "amsgrad_wd", {{"lr", 1e-2}, {"amsgrad", true}, {"weight_decay", 0.1}}, {{"lr", 2e-2}}},
      {"AdamW",
       "maximize_betas",
       {{"lr", 1e-2}, {"maximize", true}, {"betas", {0.85, 0.95}}, {"eps", 1e-5}},
       {{"lr", 1e-3}, {"weight_decay", 0.5}}},
      {"RMSprop", "plain", {{"lr", 1e-2}}, {{"lr", 3e-3}}},
      {"RMSprop", "centered", {{"lr", 1e-2}, {"centered", true}}, {{"lr", 5e-3}, {"alpha", 0.9}}},
      {"RMSprop", "momentum", {{"lr", 1e-2}, {"momentum", 0.9}}, {{"lr", 5e-3}, {"momentum", 0.0}}},
      {"RMSprop",
       "centered_momentum_wd",
       {{"lr", 1e-2}, {"centered", true}, {"momentum", 0.5}, {"weight_decay", 1e-2}},
       {{"lr", 2e-3}, {"centered", false}}},
      {"RMSprop",
       "alpha_eps_maximize",
       {{"lr", 1e-2}, {"alpha", 0.9}, {"eps", 1e-6}, {"maximize", true}},
       {{"lr", 1e-3}}},
      {"Adagrad", "plain", {{"lr", 1e-1}}, {{"lr", 3e-2}}},
      {"Adagrad",
       "lr_decay_wd",
       {{"lr", 1e-1}, {"lr_decay", 1e-2}, {"weight_decay", 1e-2}},
       {{"lr", 5e-2}, {"lr_decay", 0.1}}},
      {"Adagrad",
       "initial_accumulator_eps_maximize",
       {{"lr", 1e-1}, {"initial_accumulator_value", 0.1}, {"eps", 1e-8}, {"maximize", true}},
       {{"lr", 2e-2}, {"initial_accumulator_value", 0.0}}},
  };
}

int64_t rnd(Generator& g, int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(g.next_below(hi - lo + 1)); }

Shape random_shape(Generator& g) {
  Shape s(rnd(g, 1, 3));
  for (auto& d : s) d = rnd(g, 1, 7);
  return s;
}

class OptimParity : public ::testing::TestWithParam<Dtype> {};

TEST_P(OptimParity, EveryOptimizerMatchesPyTorchAtEveryStep) {
  const Dtype dtype = GetParam();
  const double tol = dtype == kFloat32 ? 1e-6 : 1e-12;
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " (rerun with RNNKIT_TEST_SEED)");
  Generator gen(seed);

  int spec_index = 0;
  for (const Spec& spec : specs()) {
    const std::string label = spec.optimizer + "/" + spec.label + (dtype == kFloat32 ? " f32" : " f64");
    SCOPED_TRACE(label);
    // Every fourth case has a parameter large enough for the multi-threaded update.
    const bool large = spec_index++ % 4 == 0;
    const int num_params = static_cast<int>(rnd(gen, 2, 3));
    std::vector<Tensor> params;
    StateDict inputs;
    for (int i = 0; i < num_params; ++i) {
      Tensor p = randn(large && i == 0 ? Shape{300, 257} : random_shape(gen), dtype, &gen);
      inputs.insert("p" + std::to_string(i), p.clone());
      p.requires_grad_();
      params.push_back(p);
    }
    // Gradients per step; about one in eight is missing (that parameter skips the step).
    std::vector<std::vector<Tensor>> grads(kSteps);
    for (int s = 0; s < kSteps; ++s)
      for (int i = 0; i < num_params; ++i) {
        Tensor g;
        if (gen.next_below(8) != 0) {
          g = randn(params[i].sizes(), dtype, &gen);
          inputs.insert("g" + std::to_string(s) + "_" + std::to_string(i), g);
        }
        grads[s].push_back(g);
      }

    // Group 0: the defaults, all parameters but the last; group 1: own options, the last.
    json group0 = json::array(), group1 = json::array();
    for (int i = 0; i + 1 < num_params; ++i) group0.push_back(i);
    group1.push_back(num_params - 1);
    json cfg = {{"optimizer", spec.optimizer},
                {"num_params", num_params},
                {"steps", kSteps},
                {"defaults", spec.defaults},
                {"groups", {{{"params", group0}}, {{"params", group1}, {"options", spec.group1}}}}};
    StateDict ref = oracle().call("optim_run", cfg, inputs);

    auto defaults = make_options(spec.optimizer, spec.defaults);
    std::vector<optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<Tensor>(params.begin(), params.end() - 1));
    groups.emplace_back(std::vector<Tensor>{params.back()}, make_options(spec.optimizer, spec.group1, defaults.get()));
    auto opt = make_optimizer(spec.optimizer, groups, *defaults);

    for (int s = 0; s < kSteps; ++s) {
      for (int i = 0; i < num_params; ++i) params[i].set_grad(grads[s][i].defined() ? grads[s][i].clone() : Tensor());
      opt->step();
      for (int i = 0; i < num_params; ++i) {
        const std::string key = "p" + std::to_string(s) + "_" + std::to_string(i);
        ASSERT_TRUE(ref.contains(key));
        EXPECT_CLOSE(params[i].detach(), ref.at(key), tol,
                     label + " params[step " + std::to_string(s) + " param " + std::to_string(i) + "]");
      }
    }

    // The state and the param groups under PyTorch's names.
    const StateDict mine = opt->state_dict();
    for (const auto& [key, value] : ref) {
      if (key.rfind("state.", 0) == 0) {
        ASSERT_TRUE(mine.contains(key)) << "rnnkit's state_dict lacks " << key;
        EXPECT_CLOSE(mine.at(key), value, tol, label + " state[" + key + "]");
      } else if (key.rfind("param_groups.", 0) == 0) {
        ASSERT_TRUE(mine.contains(key)) << "rnnkit's state_dict lacks " << key;
        EXPECT_EQ(mine.at(key).item(), value.item()) << key;
      }
    }
    for (const auto& [key, value] : mine) {
      if (key.size() > 7 && key.compare(key.size() - 7, 7, ".params") == 0) continue;
      EXPECT_TRUE(ref.contains(key)) << "PyTorch has no " << key;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, OptimParity, ::testing::Values(kFloat32, kFloat64),
                         [](const auto& info) { return info.param == kFloat32 ? "float32" : "float64"; });

// ---------------------------------------------------------------- validation messages

// Our error for the options built by `build` equals the one PyTorch raises for `kwargs`.
void expect_same_error(const std::string& optimizer, const json& kwargs, const std::function<void()>& build) {
  SCOPED_TRACE(optimizer + " " + kwargs.dump());
  std::string ours;
  try {
    build();
  } catch (const Error& e) {
    ours = e.what();
  }
  ASSERT_FALSE(ours.empty()) << "rnnkit accepted options PyTorch rejects";
  std::string theirs;
  try {
    oracle().call("optim_construct", {{"optimizer", optimizer}, {"defaults", kwargs}}, {});
  } catch (const Error& e) {
    theirs = e.what();
  }
  ASSERT_FALSE(theirs.empty()) << "PyTorch accepted the options";
  EXPECT_NE(theirs.find("Error: " + ours + "\n"), std::string::npos) << "rnnkit: " << ours << "\nPyTorch: " << theirs;
}

TEST(OptimValidation, MessagesMatchPyTorch) {
  Tensor p = zeros({2}).requires_grad_();
  using namespace optim;
  expect_same_error("SGD", {{"lr", -1.0}}, [&] { SGD({p}, SGDOptions(-1.0)); });
  expect_same_error("SGD", {{"lr", 0.1}, {"momentum", -0.5}}, [&] { SGD({p}, SGDOptions(0.1).momentum(-0.5)); });
  expect_same_error("SGD", {{"lr", 0.1}, {"weight_decay", -1e-5}},
                    [&] { SGD({p}, SGDOptions(0.1).weight_decay(-1e-5)); });
  expect_same_error("SGD", {{"lr", 0.1}, {"nesterov", true}}, [&] { SGD({p}, SGDOptions(0.1).nesterov(true)); });
  expect_same_error("SGD", {{"lr", 0.1}, {"nesterov", true}, {"momentum", 0.9}, {"dampening", 0.1}},
                    [&] { SGD({p}, SGDOptions(0.1).nesterov(true).momentum(0.9).dampening(0.1)); });
  expect_same_error("Adam", {{"lr", -0.001}}, [&] { Adam({p}, AdamOptions(-0.001)); });
  expect_same_error("Adam", {{"betas", {1.0, 0.999}}}, [&] { Adam({p}, AdamOptions().betas({1.0, 0.999})); });
  expect_same_error("Adam", {{"betas", {0.9, 1.5}}}, [&] { Adam({p}, AdamOptions().betas({0.9, 1.5})); });
  expect_same_error("Adam", {{"eps", -1e-8}}, [&] { Adam({p}, AdamOptions().eps(-1e-8)); });
  expect_same_error("Adam", {{"weight_decay", -0.25}}, [&] { Adam({p}, AdamOptions().weight_decay(-0.25)); });
  expect_same_error("AdamW", {{"weight_decay", -0.01}}, [&] { AdamW({p}, AdamWOptions().weight_decay(-0.01)); });
  expect_same_error("AdamW", {{"betas", {-0.1, 0.999}}}, [&] { AdamW({p}, AdamWOptions().betas({-0.1, 0.999})); });
  expect_same_error("RMSprop", {{"alpha", -0.1}}, [&] { RMSprop({p}, RMSpropOptions().alpha(-0.1)); });
  expect_same_error("RMSprop", {{"momentum", -1.0}}, [&] { RMSprop({p}, RMSpropOptions().momentum(-1.0)); });
  expect_same_error("RMSprop", {{"eps", -1e-3}}, [&] { RMSprop({p}, RMSpropOptions().eps(-1e-3)); });
  expect_same_error("Adagrad", {{"lr_decay", -0.5}}, [&] { Adagrad({p}, AdagradOptions().lr_decay(-0.5)); });
  expect_same_error("Adagrad", {{"initial_accumulator_value", -1.0}},
                    [&] { Adagrad({p}, AdagradOptions().initial_accumulator_value(-1.0)); });
  expect_same_error("Adagrad", {{"eps", -1e-10}}, [&] { Adagrad({p}, AdagradOptions().eps(-1e-10)); });
  expect_same_error("Adagrad", {{"lr", -1e+20}}, [&] { Adagrad({p}, AdagradOptions(-1e20)); });
}

// ---------------------------------------------------------------- the Optimizer API

TEST(OptimizerApi, GroupsZeroGradSkippingAndClosure) {
  using namespace optim;
  Tensor a = ones({3}).requires_grad_(), b = ones({2, 2}).requires_grad_(), c = ones({1}).requires_grad_();
  SGD opt({OptimizerParamGroup({a}), OptimizerParamGroup({b}, SGDOptions(0.5))}, SGDOptions(0.1).momentum(0.9));
  ASSERT_EQ(opt.param_groups().size(), 2u);
  EXPECT_DOUBLE_EQ(opt.param_groups()[0].options().get_lr(), 0.1);
  EXPECT_DOUBLE_EQ(opt.param_groups()[1].options().get_lr(), 0.5);
  EXPECT_DOUBLE_EQ(static_cast<const SGDOptions&>(opt.param_groups()[1].options()).momentum(), 0.0);

  // A parameter without a gradient is skipped and gets no state.
  a.set_grad(full({3}, 2.0));
  opt.step();
  EXPECT_TRUE(allclose(a.detach(), full({3}, 1.0 - 0.1 * 2.0)));
  EXPECT_TRUE(equal(b.detach(), ones({2, 2})));
  EXPECT_NE(opt.state(a), nullptr);
  EXPECT_EQ(opt.state(b), nullptr);

  opt.zero_grad(/*set_to_none=*/false);
  ASSERT_TRUE(a.grad().defined());
  EXPECT_TRUE(equal(a.grad(), zeros({3})));
  opt.zero_grad();
  EXPECT_FALSE(a.grad().defined());

  // The closure runs with grad mode on even under NoGradGuard, and its loss is returned.
  Tensor loss;
  {
    NoGradGuard no_grad;
    loss = opt.step([&] {
      opt.zero_grad();
      Tensor l = (b * b).sum();
      l.backward();
      return l;
    });
  }
  EXPECT_DOUBLE_EQ(loss.item(), 4.0);
  EXPECT_TRUE(allclose(b.detach(), full({2, 2}, 1.0 - 0.5 * 2.0)));

  opt.add_param_group(OptimizerParamGroup({c}, SGDOptions(0.25)));
  EXPECT_EQ(opt.parameters().size(), 3u);
  EXPECT_THROW(opt.add_param_group(OptimizerParamGroup({a})), Error);
  try {
    opt.add_param_group(OptimizerParamGroup({a}));
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "some parameters appear in more than one parameter group");
  }
  Tensor non_leaf = a * 2.0;
  EXPECT_THROW(opt.add_param_group(OptimizerParamGroup({non_leaf})), Error);
  EXPECT_THROW(opt.add_param_group(OptimizerParamGroup({ones({1}).requires_grad_()}, AdamOptions())), Error);
  EXPECT_THROW(SGD(std::vector<Tensor>{}, SGDOptions(0.1)), Error);
  EXPECT_THROW(opt.add_param_group(OptimizerParamGroup({zeros({2}, kInt64)})), Error);
  EXPECT_THROW(opt.param_groups()[0].options().get("no_such_option"), Error);

  // A non-contiguous gradient and a strided parameter view are handled.
  Tensor big = ones({4, 3});
  Tensor view = big.t();  // a leaf view that does not require grad
  view.requires_grad_();
  SGD opt2({view}, SGDOptions(1.0));
  Tensor strided_grad = arange(12, kFloat32).view({4, 3}).t();
  ASSERT_FALSE(strided_grad.is_contiguous());
  view.set_grad(strided_grad);
  opt2.step();
  EXPECT_TRUE(allclose(view.detach().contiguous(), 1.0 - strided_grad));
  EXPECT_TRUE(allclose(big, (1.0 - strided_grad).t()));
}

// ---------------------------------------------------------------- state round trip

using SchedulerFactory = std::function<std::unique_ptr<optim::LRScheduler>(optim::Optimizer&)>;

struct ResumeCase {
  Spec spec;
  std::string scheduler;
  SchedulerFactory make_scheduler;  // null: ReduceLROnPlateau
};

struct TrainingRun {
  std::vector<Tensor> params;
  std::unique_ptr<optim::Optimizer> opt;
  std::unique_ptr<optim::LRScheduler> sched;
  std::unique_ptr<optim::ReduceLROnPlateau> plateau;
};

TrainingRun build_run(const ResumeCase& rc, const std::vector<Tensor>& initial, double lr_scale) {
  TrainingRun r;
  for (const Tensor& p : initial) r.params.push_back(p.clone().requires_grad_());
  json defaults = rc.spec.defaults;
  defaults["lr"] = defaults["lr"].get<double>() * lr_scale;  // resume must override it
  auto d = make_options(rc.spec.optimizer, defaults);
  std::vector<optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<Tensor>(r.params.begin(), r.params.end() - 1));
  groups.emplace_back(std::vector<Tensor>{r.params.back()}, make_options(rc.spec.optimizer, rc.spec.group1, d.get()));
  r.opt = make_optimizer(rc.spec.optimizer, groups, *d);
  if (rc.make_scheduler)
    r.sched = rc.make_scheduler(*r.opt);
  else
    r.plateau = std::make_unique<optim::ReduceLROnPlateau>(
        *r.opt, optim::ReduceLROnPlateauOptions().patience(1).factor(0.5).cooldown(1));
  return r;
}

void run_steps(TrainingRun& r, const std::vector<std::vector<Tensor>>& grads, const std::vector<double>& metrics,
               int from, int to) {
  for (int s = from; s < to; ++s) {
    for (size_t i = 0; i < r.params.size(); ++i)
      r.params[i].set_grad(grads[s][i].defined() ? grads[s][i].clone() : Tensor());
    r.opt->step();
    if (r.sched) r.sched->step();
    if (r.plateau) r.plateau->step(metrics[s]);
  }
}

TEST(OptimResume, StateDictThroughSafetensorsGivesBitIdenticalSteps) {
  using namespace optim;
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " (rerun with RNNKIT_TEST_SEED)");
  Generator gen(seed);
  const auto all = specs();
  auto spec = [&](const std::string& opt, const std::string& label) {
    for (const Spec& s : all)
      if (s.optimizer == opt && s.label == label) return s;
    throw Error("no spec " + opt + "/" + label);
  };
  std::vector<ResumeCase> cases = {
      {spec("SGD", "momentum_dampening_wd"), "StepLR",
       [](Optimizer& o) { return std::make_unique<StepLR>(o, 3, 0.5); }},
      {spec("SGD", "nesterov"), "OneCycleLR",
       [](Optimizer& o) { return std::make_unique<OneCycleLR>(o, OneCycleLROptions(0.1).total_steps(40)); }},
      {spec("SGD", "momentum"), "ReduceLROnPlateau", nullptr},
      {spec("Adam", "amsgrad_wd_maximize_betas"), "CosineAnnealingLR",
       [](Optimizer& o) { return std::make_unique<CosineAnnealingLR>(o, 7, 1e-4); }},
      {spec("Adam", "plain"), "OneCycleLR",
       [](Optimizer& o) {
         return std::make_unique<OneCycleLR>(
             o,
             OneCycleLROptions({0.01, 0.02}).total_steps(30).three_phase(true).anneal_strategy(AnnealStrategy::Linear));
       }},
      {spec("AdamW", "amsgrad_wd"), "MultiStepLR",
       [](Optimizer& o) {
         return std::make_unique<MultiStepLR>(o, std::vector<int64_t>{2, 5, 5, 9}, 0.5);
       }},
      {spec("AdamW", "plain"), "LinearLR", [](Optimizer& o) { return std::make_unique<LinearLR>(o, 0.2, 1.0, 8); }},
      {spec("RMSprop", "centered_momentum_wd"), "OneCycleLR",
       [](Optimizer& o) { return std::make_unique<OneCycleLR>(o, OneCycleLROptions(0.02).total_steps(25)); }},
      {spec("Adagrad", "lr_decay_wd"), "ExponentialLR",
       [](Optimizer& o) { return std::make_unique<ExponentialLR>(o, 0.9); }},
  };
  const int n = 6;
  for (const Dtype dtype : {kFloat32, kFloat64}) {
    for (const ResumeCase& rc : cases) {
      SCOPED_TRACE(rc.spec.optimizer + "/" + rc.spec.label + " + " + rc.scheduler +
                   (dtype == kFloat32 ? " f32" : " f64"));
      std::vector<Tensor> initial;
      for (int i = 0; i < 3; ++i) initial.push_back(randn(random_shape(gen), dtype, &gen));
      std::vector<std::vector<Tensor>> grads(2 * n);
      std::vector<double> metrics;
      for (int s = 0; s < 2 * n; ++s) {
        for (const Tensor& p : initial)
          grads[s].push_back(gen.next_below(6) ? randn(p.sizes(), dtype, &gen) : Tensor());
        metrics.push_back(gen.next_below(3) == 0 ? 1.0 - 0.01 * s : 2.0);
      }

      TrainingRun straight = build_run(rc, initial, 1.0);
      run_steps(straight, grads, metrics, 0, 2 * n);

      TrainingRun first = build_run(rc, initial, 1.0);
      run_steps(first, grads, metrics, 0, n);
      StateDict checkpoint;
      for (size_t i = 0; i < first.params.size(); ++i) checkpoint.insert("model." + std::to_string(i), first.params[i]);
      for (const auto& [k, v] : first.opt->state_dict()) checkpoint.insert("optimizer." + k, v);
      const StateDict sched_state = first.sched ? first.sched->state_dict() : first.plateau->state_dict();
      for (const auto& [k, v] : sched_state) checkpoint.insert("scheduler." + k, v);
      const std::string bytes = io::to_safetensors_bytes(checkpoint);
      const StateDict loaded = io::from_safetensors_bytes(bytes, "checkpoint").tensors;

      // A fresh run with other hyperparameters and zero parameters, then everything loaded.
      std::vector<Tensor> zero_params;
      for (const Tensor& p : initial) zero_params.push_back(zeros(p.sizes(), dtype));
      TrainingRun resumed = build_run(rc, zero_params, 7.0);
      StateDict opt_state, sched_state_loaded;
      for (const auto& [k, v] : loaded) {
        if (k.rfind("optimizer.", 0) == 0) opt_state.insert(k.substr(10), v);
        if (k.rfind("scheduler.", 0) == 0) sched_state_loaded.insert(k.substr(10), v);
      }
      {
        NoGradGuard no_grad;
        for (size_t i = 0; i < resumed.params.size(); ++i)
          resumed.params[i].copy_(loaded.at("model." + std::to_string(i)));
      }
      resumed.opt->load_state_dict(opt_state);
      if (resumed.sched)
        resumed.sched->load_state_dict(sched_state_loaded);
      else
        resumed.plateau->load_state_dict(sched_state_loaded);
      run_steps(resumed, grads, metrics, n, 2 * n);

      for (size_t i = 0; i < straight.params.size(); ++i)
        EXPECT_TRUE(equal(resumed.params[i].detach(), straight.params[i].detach())) << "parameter " << i;
      const StateDict a = straight.opt->state_dict(), b = resumed.opt->state_dict();
      ASSERT_EQ(a.keys(), b.keys());
      for (const auto& [k, v] : a) EXPECT_TRUE(equal(v, b.at(k))) << k;
      const std::vector<double> lr_a = straight.sched ? straight.sched->get_last_lr() : straight.plateau->get_last_lr();
      const std::vector<double> lr_b = resumed.sched ? resumed.sched->get_last_lr() : resumed.plateau->get_last_lr();
      EXPECT_EQ(lr_a, lr_b);
    }
  }
}

TEST(OptimResume, LoadValidatesAndNamesTheKey) {
  using namespace optim;
  Tensor a = randn({3, 4}).requires_grad_(), b = randn({5}).requires_grad_();
  Adam opt({OptimizerParamGroup({a}), OptimizerParamGroup({b}, AdamOptions(0.5))}, AdamOptions().amsgrad(true));
  a.set_grad(randn({3, 4}));
  b.set_grad(randn({5}));
  opt.step();
  const StateDict good = opt.state_dict();
  EXPECT_TRUE(good.contains("state.0.max_exp_avg_sq"));
  EXPECT_TRUE(good.contains("param_groups.1.betas.1"));
  EXPECT_EQ(good.at("state.1.step").dtype(), kFloat64);
  EXPECT_EQ(good.at("state.1.step").dim(), 0);

  auto expect_error = [&](const StateDict& sd, const std::string& needle) {
    try {
      opt.load_state_dict(sd);
      ADD_FAILURE() << "load accepted a state with " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    // A failed load changes nothing.
    const StateDict now = opt.state_dict();
    ASSERT_EQ(now.keys(), good.keys());
    for (const auto& [k, v] : good) EXPECT_TRUE(equal(v, now.at(k))) << k;
  };
  StateDict missing = good;
  missing.erase("state.0.exp_avg");
  expect_error(missing, "state.0.exp_avg");
  StateDict missing_max = good;
  missing_max.erase("state.0.max_exp_avg_sq");
  expect_error(missing_max, "state.0.max_exp_avg_sq");
  EXPECT_FALSE(good.contains("state.1.max_exp_avg_sq"));  // group 1 has its own options: no amsgrad
  StateDict wrong_shape = good;
  wrong_shape.insert("state.1.exp_avg_sq", zeros({6}));
  expect_error(wrong_shape, "state.1.exp_avg_sq");
  StateDict missing_option = good;
  missing_option.erase("param_groups.0.eps");
  expect_error(missing_option, "param_groups.0.eps");
  StateDict unexpected = good;
  unexpected.insert("state.0.momentum", zeros({3, 4}));
  expect_error(unexpected, "state.0.momentum");
  StateDict extra_group = good;
  extra_group.insert("param_groups.2.params", from_vector(std::vector<int64_t>{7}, {1}));
  expect_error(extra_group, "different number of parameter groups");
  StateDict wrong_size = good;
  wrong_size.insert("param_groups.1.params", from_vector(std::vector<int64_t>{1, 2}, {2}));
  expect_error(wrong_size, "doesn't match the size of optimizer's group");
  StateDict bad_value = good;
  bad_value.insert("param_groups.0.lr", scalar_tensor(-1.0, kFloat64));
  expect_error(bad_value, "Invalid learning rate: -1.0");

  // A float64 state loads into float32 parameters (converted), as PyTorch casts it.
  StateDict as_double;
  for (const auto& [k, v] : good) as_double.insert(k, v.is_floating_point() ? v.to(kFloat64) : v);
  opt.load_state_dict(as_double);
  EXPECT_EQ(opt.state_dict().at("state.0.exp_avg").dtype(), kFloat32);
}

}  // namespace
