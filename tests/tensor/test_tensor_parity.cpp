// Live parity with PyTorch for every tensor op PyTorch has: fresh random
// shapes and values each run, float32 and float64, forward values and the
// gradients of every input.
#include <gtest/gtest.h>

#include <functional>

#include "support/oracle.h"

using namespace rnnkit;
using nlohmann::json;
using rnnkit::testing::oracle;

namespace {

struct Spec {
  std::string name;
  json call;  // torch_fn config: fn, args ("$a" names inputs), kwargs, method/functional
  std::function<std::vector<Shape>(Generator&)> shapes;
  std::function<Tensor(const std::vector<Tensor>&)> op;
  double low = -2, high = 2;
  // Extra non-differentiable inputs (index tensors, masks), by name.
  std::function<StateDict(Generator&, const std::vector<Shape>&)> extras = nullptr;
};

int64_t rnd(Generator& g, int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(g.next_below(hi - lo + 1)); }

Shape random_shape(Generator& g, int64_t min_rank = 1, int64_t max_rank = 3) {
  Shape s(rnd(g, min_rank, max_rank));
  for (auto& d : s) d = rnd(g, 1, 6);
  return s;
}

// A shape that broadcasts against s: some dims set to 1, some leading dims dropped.
Shape broadcastable(Generator& g, const Shape& s) {
  Shape b(s.begin() + rnd(g, 0, static_cast<int64_t>(s.size()) - 1), s.end());
  for (auto& d : b)
    if (g.next_below(3) == 0) d = 1;
  return b;
}

const char* kNames[] = {"a", "b", "c"};

std::vector<Spec> specs() {
  auto one = [](Generator& g) { return std::vector<Shape>{random_shape(g)}; };
  auto two_bc = [](Generator& g) {
    Shape a = random_shape(g);
    Shape b = broadcastable(g, a);
    return g.next_below(2) ? std::vector<Shape>{a, b} : std::vector<Shape>{b, a};
  };
  std::vector<Spec> v;
  auto unary = [&](const std::string& name, std::function<Tensor(const Tensor&)> f, double lo = -2, double hi = 2) {
    v.push_back({name, {{"fn", name}, {"args", {"$a"}}}, one, [f](auto& x) { return f(x[0]); }, lo, hi});
  };
  unary("neg", [](const Tensor& x) { return neg(x); });
  unary("exp", [](const Tensor& x) { return exp(x); });
  unary("log", [](const Tensor& x) { return log(x); }, 0.1, 4);
  unary("tanh", [](const Tensor& x) { return tanh(x); }, -4, 4);
  unary("sigmoid", [](const Tensor& x) { return sigmoid(x); }, -8, 8);
  unary("relu", [](const Tensor& x) { return relu(x); });
  unary("sqrt", [](const Tensor& x) { return sqrt(x); }, 0.1, 4);
  unary("abs", [](const Tensor& x) { return abs(x); });
  v.push_back({"pow", {{"fn", "pow"}, {"args", {"$a", 2.5}}}, one, [](auto& x) { return pow(x[0], 2.5); }, 0.1, 3});
  v.push_back({"clamp", {{"fn", "clamp"}, {"args", {"$a", -0.5, 0.75}}}, one,
               [](auto& x) { return clamp(x[0], -0.5, 0.75); }});
  v.push_back({"add_alpha", {{"fn", "add"}, {"args", {"$a", "$b"}}, {"kwargs", {{"alpha", 0.3}}}}, two_bc,
               [](auto& x) { return add(x[0], x[1], 0.3); }});
  v.push_back({"sub", {{"fn", "sub"}, {"args", {"$a", "$b"}}}, two_bc, [](auto& x) { return x[0] - x[1]; }});
  v.push_back({"mul", {{"fn", "mul"}, {"args", {"$a", "$b"}}}, two_bc, [](auto& x) { return x[0] * x[1]; }});
  v.push_back({"div", {{"fn", "div"}, {"args", {"$a", "$b"}}}, two_bc, [](auto& x) { return x[0] / x[1]; }, 0.5, 2});
  v.push_back({"maximum", {{"fn", "maximum"}, {"args", {"$a", "$b"}}}, two_bc,
               [](auto& x) { return maximum(x[0], x[1]); }});
  v.push_back({"minimum", {{"fn", "minimum"}, {"args", {"$a", "$b"}}}, two_bc,
               [](auto& x) { return minimum(x[0], x[1]); }});
  v.push_back({"where", {{"fn", "where"}, {"args", {"$cond", "$a", "$b"}}}, two_bc,
               [](auto& x) { return where(gt(x[0].detach(), 0.0).to(kBool), x[0], x[1]); }, -2, 2,
               nullptr});
  // The sums are compared with the exact answer rounded to the dtype ("exact":
  // PyTorch in float64): rnnkit accumulates float32 sums in double.
  v.push_back({"sum_dims", {{"fn", "sum"}, {"args", {"$a", json::array({0, -1})}}, {"kwargs", {{"keepdim", true}}}, {"exact", true}},
               [](Generator& g) { return std::vector<Shape>{random_shape(g, 2, 4)}; },
               [](auto& x) { return sum(x[0], {0, -1}, true); }});
  v.push_back({"sum_all", {{"fn", "sum"}, {"args", {"$a"}}, {"exact", true}}, one, [](auto& x) { return sum(x[0]); }});
  // Leading dims of a contiguous tensor (a bias gradient's column sums) take
  // their own loop (native::sum).
  v.push_back({"sum_leading", {{"fn", "sum"}, {"args", {"$a", json::array({0})}}, {"exact", true}},
               [](Generator& g) { return std::vector<Shape>{random_shape(g, 2, 4)}; },
               [](auto& x) { return sum(x[0], {0}); }});
  v.push_back({"sum_leading_keepdim",
               {{"fn", "sum"}, {"args", {"$a", json::array({1, 0})}}, {"kwargs", {{"keepdim", true}}}, {"exact", true}},
               [](Generator& g) { return std::vector<Shape>{random_shape(g, 3, 4)}; },
               [](auto& x) { return sum(x[0], {1, 0}, true); }});
  v.push_back({"mean_dim", {{"fn", "mean"}, {"args", {"$a", json::array({-1})}}, {"exact", true}},
               [](Generator& g) { return std::vector<Shape>{random_shape(g, 2, 3)}; },
               [](auto& x) { return mean(x[0], {-1}); }});
  v.push_back({"max_dim", {{"fn", "max"}, {"args", {"$a", 0}}}, one, [](auto& x) { return max(x[0], 0).values; }});
  v.push_back({"min_dim", {{"fn", "min"}, {"args", {"$a", -1}}}, one, [](auto& x) { return min(x[0], -1).values; }});
  v.push_back({"norm", {{"fn", "norm"}, {"args", {"$a"}}}, one, [](auto& x) { return norm(x[0]); }});
  v.push_back({"matmul_2d", {{"fn", "matmul"}, {"args", {"$a", "$b"}}},
               [](Generator& g) {
                 int64_t m = rnd(g, 1, 9), k = rnd(g, 1, 9), n = rnd(g, 1, 9);
                 return std::vector<Shape>{{m, k}, {k, n}};
               },
               [](auto& x) { return matmul(x[0], x[1]); }});
  v.push_back({"matmul_batched", {{"fn", "matmul"}, {"args", {"$a", "$b"}}},
               [](Generator& g) {
                 int64_t b = rnd(g, 1, 4), m = rnd(g, 1, 7), k = rnd(g, 1, 7), n = rnd(g, 1, 7);
                 return std::vector<Shape>{{b, m, k}, {1, k, n}};
               },
               [](auto& x) { return matmul(x[0], x[1]); }});
  v.push_back({"linear", {{"fn", "linear"}, {"functional", true}, {"args", {"$a", "$b", "$c"}}},
               [](Generator& g) {
                 int64_t b = rnd(g, 1, 5), i = rnd(g, 1, 9), o = rnd(g, 1, 9);
                 return std::vector<Shape>{{b, 2, i}, {o, i}, {o}};
               },
               [](auto& x) { return linear(x[0], x[1], x[2]); }});
  v.push_back({"cat", {{"fn", "cat"}, {"args", {json::array({"$a", "$b"}), 1}}},
               [](Generator& g) {
                 int64_t r = rnd(g, 1, 4);
                 return std::vector<Shape>{{r, rnd(g, 1, 5), 3}, {r, rnd(g, 1, 5), 3}};
               },
               [](auto& x) { return cat({x[0], x[1]}, 1); }});
  v.push_back({"stack", {{"fn", "stack"}, {"args", {json::array({"$a", "$b"}), 0}}},
               [](Generator& g) {
                 Shape s = random_shape(g);
                 return std::vector<Shape>{s, s};
               },
               [](auto& x) { return stack({x[0], x[1]}, 0); }});
  v.push_back({"softmax", {{"fn", "softmax"}, {"args", {"$a", -1}}}, one, [](auto& x) { return softmax(x[0], -1); }, -5, 5});
  v.push_back({"log_softmax", {{"fn", "log_softmax"}, {"args", {"$a", 0}}}, one,
               [](auto& x) { return log_softmax(x[0], 0); }, -5, 5});
  // Long rows and many elements: the float ops' vector paths (whole vectors,
  // 4096-element pieces, the columns' 512-wide blocks with a partial last one)
  // beside the tiny shapes above, which reach only their tails.
  auto long_1d = [](Generator& g) { return std::vector<Shape>{{rnd(g, 300, 9000)}}; };
  v.push_back({"exp_long", {{"fn", "exp"}, {"args", {"$a"}}}, long_1d, [](auto& x) { return exp(x[0]); }, -20, 20});
  v.push_back({"tanh_long", {{"fn", "tanh"}, {"args", {"$a"}}}, long_1d, [](auto& x) { return tanh(x[0]); }, -10, 10});
  v.push_back({"sigmoid_long", {{"fn", "sigmoid"}, {"args", {"$a"}}}, long_1d, [](auto& x) { return sigmoid(x[0]); },
               -20, 20});
  auto wide_rows = [](Generator& g) { return std::vector<Shape>{{rnd(g, 1, 5), rnd(g, 300, 3000)}}; };
  auto inner_cols = [](Generator& g) { return std::vector<Shape>{{rnd(g, 1, 3), rnd(g, 2, 16), rnd(g, 200, 700)}}; };
  v.push_back({"softmax_wide", {{"fn", "softmax"}, {"args", {"$a", -1}}}, wide_rows,
               [](auto& x) { return softmax(x[0], -1); }, -10, 10});
  v.push_back({"log_softmax_wide", {{"fn", "log_softmax"}, {"args", {"$a", 1}}}, wide_rows,
               [](auto& x) { return log_softmax(x[0], 1); }, -10, 10});
  v.push_back({"softmax_inner", {{"fn", "softmax"}, {"args", {"$a", 1}}}, inner_cols,
               [](auto& x) { return softmax(x[0], 1); }, -5, 5});
  v.push_back({"log_softmax_inner", {{"fn", "log_softmax"}, {"args", {"$a", 1}}}, inner_cols,
               [](auto& x) { return log_softmax(x[0], 1); }, -5, 5});
  v.push_back({"transpose_permute", {{"fn", "permute"}, {"method", true}, {"args", {"$a", json::array({2, 0, 1})}}},
               [](Generator& g) { return std::vector<Shape>{random_shape(g, 3, 3)}; },
               [](auto& x) { return x[0].permute({2, 0, 1}); }});
  v.push_back({"narrow", {{"fn", "narrow"}, {"args", {"$a", 0, 0, 1}}}, one, [](auto& x) { return x[0].narrow(0, 0, 1); }});
  v.push_back({"index_select", {{"fn", "index_select"}, {"args", {"$a", 0, "$index"}}}, one,
               [](auto& x) { return Tensor(); }});
  v.push_back({"embedding", {{"fn", "embedding"}, {"functional", true}, {"args", {"$index", "$a"}}},
               [](Generator& g) { return std::vector<Shape>{{rnd(g, 2, 9), rnd(g, 1, 6)}}; },
               [](auto& x) { return Tensor(); }});
  return v;
}

class TensorParity : public ::testing::TestWithParam<Dtype> {};

TEST_P(TensorParity, EveryOpMatchesPyTorch) {
  const Dtype dtype = GetParam();
  const double tol = dtype == kFloat32 ? 1e-6 : 1e-12;
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " (rerun with RNNKIT_TEST_SEED)");
  Generator gen(seed);
  for (const Spec& spec : specs()) {
    for (int rep = 0; rep < 4; ++rep) {
      SCOPED_TRACE(spec.name + " rep " + std::to_string(rep));
      std::vector<Shape> shapes = spec.shapes(gen);
      std::vector<Tensor> xs;
      StateDict inputs;
      json cfg = spec.call;
      cfg["grad_inputs"] = json::array();
      for (size_t i = 0; i < shapes.size(); ++i) {
        Tensor t = (rand(shapes[i], dtype, &gen) * (spec.high - spec.low) + spec.low).detach();
        t.requires_grad_();
        xs.push_back(t);
        inputs.insert(kNames[i], t);
        cfg["grad_inputs"].push_back(kNames[i]);
      }
      Tensor out;
      if (spec.name == "where") {
        Tensor cond = gt(rand(xs[0].sizes(), dtype, &gen), 0.5);
        inputs.insert("cond", cond);
        out = where(cond, xs[0], xs[1]);
      } else if (spec.name == "index_select") {
        const int64_t n = xs[0].size(0);
        Tensor index = from_vector(std::vector<int64_t>{n - 1, 0, n / 2, n - 1});
        inputs.insert("index", index);
        out = index_select(xs[0], 0, index);
      } else if (spec.name == "embedding") {
        const int64_t n = xs[0].size(0);
        std::vector<int64_t> ids;
        for (int i = 0; i < 7; ++i) ids.push_back(static_cast<int64_t>(gen.next_below(n)));
        Tensor index = from_vector(ids, {7});
        inputs.insert("index", index);
        out = embedding(xs[0], index);
      } else {
        out = spec.op(xs);
      }
      Tensor grad_out = randn(out.sizes(), dtype, &gen);
      inputs.insert("grad_out", grad_out);
      out.backward(grad_out);
      StateDict ref = oracle().call("torch_fn", cfg, inputs);
      const std::string label = spec.name + (dtype == kFloat32 ? " f32" : " f64");
      EXPECT_CLOSE(out, ref.at("out"), tol, label + " forward");
      for (size_t i = 0; i < xs.size(); ++i) {
        const std::string gname = std::string("grad_") + kNames[i];
        ASSERT_TRUE(ref.contains(gname)) << spec.name << ": PyTorch produced no " << gname;
        EXPECT_CLOSE(xs[i].grad(), ref.at(gname), tol, label + " backward " + kNames[i]);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, TensorParity, ::testing::Values(kFloat32, kFloat64),
                         [](const auto& info) { return info.param == kFloat32 ? "float32" : "float64"; });

TEST(TensorParity, DropoutStatisticsAndReproducibility) {
  Generator g1(5), g2(5);
  Tensor x = ones({200, 100});
  Tensor a = dropout(x, 0.3, true, &g1);
  Tensor b = dropout(x, 0.3, true, &g2);
  EXPECT_TRUE(equal(a, b));
  const double kept = gt(a, 0.0).to(kFloat32).mean().item();
  EXPECT_NEAR(kept, 0.7, 0.01);
  EXPECT_NEAR(a.mean().item(), 1.0, 0.02);  // inverted scaling keeps the mean
  EXPECT_TRUE(equal(dropout(x, 0.3, false, &g1), x));
  // Element i is kept, scaled by 1 / (1 - p), where the generator's i-th
  // next_double() >= p (whatever p, also not a multiple of 2^-53).
  for (double p : {0.3, 0.5, 1.0 / 3.0, 0.9}) {
    Generator g(17), replay(17);
    const Tensor y = dropout(ones({3001}), p, true, &g);
    const std::vector<float> v = y.to_vector<float>();
    const float keep = static_cast<float>(1.0 / (1.0 - p));
    for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], replay.next_double() >= p ? keep : 0.f) << "p " << p << ", element " << i;
    EXPECT_EQ(g.next_u64(), replay.next_u64()) << "p " << p;
  }
}

}  // namespace
