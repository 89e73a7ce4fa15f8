// Finite-difference checks (float64) of the backward of every differentiable
// op, plus engine behaviour: accumulation, detach, no_grad, graph freeing.
#include <gtest/gtest.h>

#include <cmath>

#include "rnnkit/autograd/node.h"
#include "support/gradcheck.h"

using namespace rnnkit;
using rnnkit::testing::gradcheck;

namespace {

struct GradCase {
  const char* name;
  std::vector<Shape> shapes;
  std::function<Tensor(const std::vector<Tensor>&)> op;
  double low = -1.0, high = 1.0;  // input range
};

// Names the case in test listings instead of dumping its bytes.
void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class GradcheckOps : public ::testing::TestWithParam<GradCase> {};

TEST_P(GradcheckOps, MatchesFiniteDifferences) {
  const GradCase& c = GetParam();
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  Generator gen(seed);
  std::vector<Tensor> inputs;
  for (const Shape& s : c.shapes) {
    Tensor t = rand(s, kFloat64, &gen);
    t = (t * (c.high - c.low) + c.low).detach();
    t.requires_grad_();
    inputs.push_back(t);
  }
  // A fixed random weighting makes every output element matter.
  Tensor probe = c.op(inputs).detach();
  Tensor weight = randn(probe.sizes(), kFloat64, &gen);
  auto f = [&](const std::vector<Tensor>& xs) { return sum(c.op(xs) * weight); };
  EXPECT_TRUE(gradcheck(f, inputs));
}

Tensor idx(std::vector<int64_t> v, Shape s = {}) { return from_vector(v, s); }

const GradCase kCases[] = {
    {"add_broadcast", {{3, 4}, {4}}, [](auto& x) { return add(x[0], x[1], 0.7); }},
    {"sub", {{3, 1}, {1, 4}}, [](auto& x) { return x[0] - x[1]; }},
    {"mul_broadcast", {{2, 3, 4}, {3, 1}}, [](auto& x) { return x[0] * x[1]; }},
    {"div", {{3, 4}, {3, 4}}, [](auto& x) { return x[0] / x[1]; }, 0.5, 2.0},
    {"scalar_ops", {{5}}, [](auto& x) { return (2.0 - x[0]) * 3.0 + x[0] / 4.0 - 1.0; }},
    {"neg", {{5}}, [](auto& x) { return -x[0]; }},
    {"exp", {{5}}, [](auto& x) { return exp(x[0]); }},
    {"log", {{5}}, [](auto& x) { return log(x[0]); }, 0.2, 3.0},
    {"tanh", {{2, 5}}, [](auto& x) { return tanh(x[0]); }, -3, 3},
    {"sigmoid", {{2, 5}}, [](auto& x) { return sigmoid(x[0]); }, -6, 6},
    {"relu", {{7}}, [](auto& x) { return relu(x[0]); }},
    {"sqrt", {{5}}, [](auto& x) { return sqrt(x[0]); }, 0.2, 3.0},
    {"abs", {{5}}, [](auto& x) { return abs(x[0]); }},
    {"pow", {{5}}, [](auto& x) { return pow(x[0], 3.0); }},
    {"pow_frac", {{5}}, [](auto& x) { return pow(x[0], 1.5); }, 0.2, 2.0},
    {"clamp", {{8}}, [](auto& x) { return clamp(x[0], -0.5, 0.5); }},
    {"maximum", {{6}, {6}}, [](auto& x) { return maximum(x[0], x[1]); }},
    {"minimum", {{2, 3}, {3}}, [](auto& x) { return minimum(x[0], x[1]); }},
    {"where", {{3, 4}, {3, 4}}, [](auto& x) { return where(gt(x[0], x[1]), x[0] * 2.0, x[1]); }},
    {"masked_fill", {{3, 4}}, [](auto& x) { return masked_fill(x[0], gt(x[0], 0.2), 0.5); }},
    {"sum_all", {{3, 4}}, [](auto& x) { return sum(x[0]); }},
    {"sum_dims", {{2, 3, 4}}, [](auto& x) { return sum(x[0], {0, 2}); }},
    {"sum_keepdim", {{2, 3, 4}}, [](auto& x) { return sum(x[0], {-1}, true); }},
    {"mean_dims", {{2, 3, 4}}, [](auto& x) { return mean(x[0], {1}); }},
    {"max_dim", {{3, 5}}, [](auto& x) { return max(x[0], 1).values; }},
    {"min_all", {{3, 5}}, [](auto& x) { return min(x[0]); }},
    {"norm2", {{3, 5}}, [](auto& x) { return norm(x[0]); }},
    {"norm1", {{3, 5}}, [](auto& x) { return norm(x[0], 1.0); }},
    {"mm", {{3, 4}, {4, 5}}, [](auto& x) { return mm(x[0], x[1]); }},
    {"matmul_batched", {{2, 3, 4}, {1, 4, 2}}, [](auto& x) { return matmul(x[0], x[1]); }},
    {"matmul_vec", {{4}, {4, 3}}, [](auto& x) { return matmul(x[0], x[1]); }},
    {"matmul_3d_2d", {{2, 3, 4}, {4, 5}}, [](auto& x) { return matmul(x[0], x[1]); }},
    {"linear", {{2, 3, 4}, {5, 4}, {5}}, [](auto& x) { return linear(x[0], x[1], x[2]); }},
    {"linear_vec_no_bias", {{4}, {5, 4}}, [](auto& x) { return linear(x[0], x[1], Tensor()); }},
    // The same weight at three steps: the earlier steps' nodes add their dW
    // into the sum the later ones started (Node::accumulate_into).
    {"linear_shared_weight",
     {{3, 4}, {4, 4}, {4}},
     [](auto& x) { return linear(tanh(linear(tanh(linear(x[0], x[1], x[2])), x[1], x[2])), x[1], x[2]); }},
    {"cat", {{2, 3}, {2, 2}}, [](auto& x) { return cat({x[0], x[1]}, 1); }},
    {"stack", {{2, 3}, {2, 3}}, [](auto& x) { return stack({x[0], x[1]}, 1); }},
    {"index_select", {{4, 3}}, [](auto& x) { return index_select(x[0], 0, idx({3, 0, 3})); }},
    {"gather", {{3, 4}}, [](auto& x) { return gather(x[0], 1, idx({0, 3, 1, 1, 2, 2}, {3, 2})); }},
    {"transpose", {{3, 4}}, [](auto& x) { return x[0].t() * x[0].t(); }},
    {"permute", {{2, 3, 4}}, [](auto& x) { return x[0].permute({2, 0, 1}).exp(); }},
    {"narrow_select", {{4, 5}}, [](auto& x) { return x[0].narrow(1, 1, 3).select(0, 2); }},
    {"slice_step", {{6, 5}}, [](auto& x) { return x[0].slice(0, 1, 6, 2); }},
    {"unsqueeze_expand", {{3}}, [](auto& x) { return x[0].unsqueeze(0).expand({4, 3}) * 1.5; }},
    {"reshape_noncontig", {{3, 4}}, [](auto& x) { return x[0].t().reshape({2, 6}); }},
    {"view_flatten", {{2, 3, 4}}, [](auto& x) { return x[0].view({6, 4}).flatten(); }},
    {"squeeze", {{3, 1, 2}}, [](auto& x) { return x[0].squeeze(1); }},
    {"chunk", {{4, 6}}, [](auto& x) { return x[0].chunk(3, 1)[1]; }},
    {"flip", {{3, 4}}, [](auto& x) { return flip(x[0], {0, 1}); }},
    {"clone", {{3}}, [](auto& x) { return x[0].clone() * 2.0; }},
    {"softmax", {{3, 5}}, [](auto& x) { return softmax(x[0], 1); }, -3, 3},
    {"softmax_dim0", {{3, 5}}, [](auto& x) { return softmax(x[0], 0); }, -3, 3},
    {"log_softmax", {{2, 3, 4}}, [](auto& x) { return log_softmax(x[0], -1); }, -3, 3},
    {"embedding", {{5, 3}}, [](auto& x) { return embedding(x[0], idx({1, 4, 1, 0}, {2, 2})); }},
    // Looked up at three steps: the earlier lookups add their rows into the
    // sum the later ones started (Node::accumulate_into).
    {"embedding_shared",
     {{5, 3}},
     [](auto& x) {
       Tensor h = embedding(x[0], idx({1, 2, 4}, {3}));
       h = tanh(h + embedding(x[0], idx({2, 1, 1}, {3})));
       return tanh(h * embedding(x[0], idx({0, 2, 1}, {3})));
     }},
    {"dropout_seeded",
     {{4, 5}},
     [](auto& x) {
       Generator g(123);
       return dropout(x[0], 0.3, true, &g);
     }},
};

INSTANTIATE_TEST_SUITE_P(All, GradcheckOps, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Autograd, AccumulatesIntoLeavesAndFreesGraph) {
  Tensor w = ones({3}, kFloat64).requires_grad_();
  Tensor y = sum(w * w);
  y.backward();
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{2, 2, 2}));
  sum(w * 3.0).backward();
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{5, 5, 5}));
  EXPECT_THROW(y.backward(), rnnkit::Error);  // graph freed after the first backward
  Tensor z = sum(w * w);
  z.backward(Tensor(), /*retain_graph=*/true);
  z.backward();
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{9, 9, 9}));
}

TEST(Autograd, DetachNoGradAndNonScalarBackward) {
  Tensor w = ones({2}, kFloat64).requires_grad_();
  {
    NoGradGuard guard;
    Tensor y = w * 2.0;
    EXPECT_FALSE(y.requires_grad());
  }
  Tensor d = (w * 2.0).detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  Tensor v = w * 3.0;
  EXPECT_THROW(v.backward(), rnnkit::Error);  // non-scalar needs a gradient
  v.backward(tensor({1.0, 2.0}));
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{3, 6}));
  EXPECT_THROW(d.backward(), rnnkit::Error);  // does not require grad
}

// A leaf's first gradient is taken as it is when nothing else can see its
// memory, and copied otherwise: every .grad must be memory of its own.
TEST(Autograd, FirstGradientsOwnTheirMemory) {
  auto shares = [](const Tensor& a, const Tensor& b) { return a.storage() == b.storage(); };
  // One incoming gradient reaches two leaves (add passes it to both).
  Tensor a = ones({3}, kFloat64).requires_grad_(), b = ones({3}, kFloat64).requires_grad_();
  Tensor g = tensor({1.0, 2.0, 3.0});
  (a + b).backward(g);
  EXPECT_FALSE(shares(a.grad(), b.grad()));
  EXPECT_FALSE(shares(a.grad(), g));
  a.grad().mul_(2.0);
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(g.to_vector<double>(), (std::vector<double>{1, 2, 3}));
  // A leaf as the root: the caller's gradient is not taken.
  Tensor x = ones({2}, kFloat64).requires_grad_();
  Tensor dy = tensor({4.0, 5.0});
  x.backward(dy);
  EXPECT_FALSE(shares(x.grad(), dy));
  dy.fill_(0.0);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{4, 5}));
  // A view's gradient, and one kept by a retained graph, are leaves' own too.
  Tensor w = ones({2, 3}, kFloat64).requires_grad_();
  Tensor r = sum(w.view({6}) * 2.0);
  r.backward(Tensor(), /*retain_graph=*/true);
  Tensor first = w.grad().clone();
  w.grad().mul_(10.0);
  r.backward();
  EXPECT_TRUE(equal(w.grad(), first * 11.0));
  // The taken gradient accumulates in place afterwards (a second backward adds).
  Tensor v = ones({4}, kFloat64).requires_grad_();
  sum(v * 3.0).backward();
  const Tensor held = v.grad();
  sum(v * 1.0).backward();
  EXPECT_TRUE(shares(v.grad(), held));
  EXPECT_EQ(v.grad().to_vector<double>(), (std::vector<double>{4, 4, 4, 4}));
}

// Gradients reaching one input of a node are summed in place only into a sum
// nothing else can see: never into the caller's gradient, nor into a tensor
// that another input's buffer holds too (add passes one gradient to both of
// its inputs).
TEST(Autograd, SumsGradientsInPlaceOnlyWhenUnshared) {
  // The caller's gradient reaches x twice.
  Tensor x = ones({3}, kFloat64).requires_grad_();
  Tensor g = tensor({1.0, 2.0, 3.0});
  (x + x).backward(g);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 4, 6}));
  EXPECT_EQ(g.to_vector<double>(), (std::vector<double>{1, 2, 3}));
  // a's gradient from a + b is b's too; a's other gradient comes before or
  // after it (nodes run latest created first). b's accumulator is made first,
  // so that it runs after both.
  for (bool add_first : {true, false}) {
    SCOPED_TRACE(add_first ? "a + b first" : "a * 2 first");
    Tensor a = ones({4}, kFloat64).requires_grad_(), b = ones({4}, kFloat64).requires_grad_();
    const Tensor b_used_early = b * 1.0;
    Tensor u, m;
    if (add_first) {
      u = a + b;
      m = a * 2.0;
    } else {
      m = a * 2.0;
      u = a + b;
    }
    sum(add_first ? u + m : m + u).backward();
    EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{3, 3, 3, 3}));
    EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{1, 1, 1, 1}));
  }
  // A weight used at every step of a loop, in float32: its gradient is the sum
  // of the steps' gradients, added in the order the nodes run (the last step's
  // first), which separate copies of the weight give one by one.
  Generator gen(5);
  const Tensor w0 = randn({48, 48}, kFloat32, &gen) * 0.2, h0 = randn({2, 48}, kFloat32, &gen);
  const int steps = 6;
  Tensor w = w0.clone().requires_grad_();
  std::vector<Tensor> copies;
  Tensor h = h0, hc = h0;
  for (int t = 0; t < steps; ++t) {
    copies.push_back(w0.clone().requires_grad_());
    h = tanh(matmul(h, w));
    hc = tanh(matmul(hc, copies.back()));
  }
  sum(h).backward();
  sum(hc).backward();
  Tensor want = copies[steps - 1].grad();
  for (int t = steps - 2; t >= 0; --t) want = want + copies[t].grad();
  EXPECT_TRUE(equal(w.grad(), want));
}

// y = ca * a + cb * b through a node that takes the engine's offer to add its
// gradients into an input's running sum (Node::sums_into_inputs), logging for
// each input whether it was offered one.
class ScaledSum final : public autograd::Node {
 public:
  ScaledSum(double ca, double cb, std::vector<std::vector<bool>>* log) : ca_(ca), cb_(cb), log_(log) {}
  std::string name() const override { return "ScaledSum"; }
  bool sums_into_inputs() const override { return true; }
  autograd::tensor_list apply(autograd::tensor_list&& grads) override {
    autograd::tensor_list out = {grads[0] * ca_, grads[0] * cb_};
    std::vector<bool> offered(2, false);
    for (size_t i = 0; i < 2; ++i)
      if (i < accumulate_into.size() && accumulate_into[i].defined()) {
        NoGradGuard guard;
        accumulate_into[i].add_(out[i]);
        out[i] = Tensor();
        offered[i] = true;
      }
    log_->push_back(offered);
    return out;
  }

 private:
  double ca_, cb_;
  std::vector<std::vector<bool>>* log_;
};

Tensor scaled_sum(const Tensor& a, const Tensor& b, double ca, double cb, std::vector<std::vector<bool>>* log) {
  Tensor y;
  {
    NoGradGuard guard;
    y = a * ca + b * cb;
  }
  autograd::connect(std::make_shared<ScaledSum>(ca, cb, log), {a, b}, {&y});
  return y;
}

// The engine offers a node an input's running sum only where the sum exists,
// nothing else sees it and no other edge of the node leads to the same slot;
// the gradients come out right whether the node takes the offer or not.
TEST(Autograd, OffersRunningSumsOnlyWhenUnshared) {
  using Log = std::vector<std::vector<bool>>;
  auto leaf = [](double v) { return full({3}, v, kFloat64).requires_grad_(); };
  auto values = [](const Tensor& t) { return t.to_vector<double>(); };
  {  // w used by two nodes: the later-created one runs first and is offered nothing
    Log log;
    Tensor w = leaf(1), u = leaf(1), v = leaf(1);
    Tensor first = scaled_sum(w, u, 2.0, 1.0, &log);
    Tensor second = scaled_sum(w, v, 3.0, 1.0, &log);
    sum(first + second).backward();
    EXPECT_EQ(log, (Log{{false, false}, {true, false}}));
    EXPECT_EQ(values(w.grad()), (std::vector<double>{5, 5, 5}));
    EXPECT_EQ(values(u.grad()), (std::vector<double>{1, 1, 1}));
  }
  {  // the same slot on both edges of a node: not offered
    Log log;
    Tensor w = leaf(1), v = leaf(1);
    Tensor twice = scaled_sum(w, w, 2.0, 3.0, &log);
    Tensor other = scaled_sum(w, v, 1.0, 1.0, &log);
    sum(twice + other).backward();
    EXPECT_EQ(log, (Log{{false, false}, {false, false}}));
    EXPECT_EQ(values(w.grad()), (std::vector<double>{6, 6, 6}));
  }
  {  // w's sum so far is the tensor add passed to b too: not offered
    Log log;
    Tensor w = leaf(1), b = leaf(1), v = leaf(1);
    const Tensor b_used_early = b * 1.0;  // b's accumulator runs after the node
    Tensor y = scaled_sum(w, v, 4.0, 1.0, &log);
    Tensor added = w + b;
    sum(y + added).backward();
    EXPECT_EQ(log, (Log{{false, false}}));
    EXPECT_EQ(values(w.grad()), (std::vector<double>{5, 5, 5}));
    EXPECT_EQ(values(b.grad()), (std::vector<double>{1, 1, 1}));
  }
}

// An embedding looked up at several steps with a padding row: the padding
// row gets no gradient whether a lookup returns its own gradient or adds into
// the running sum, and the rest is the lookups' gradients summed.
TEST(Autograd, EmbeddingLookupsShareOneGradient) {
  Generator gen(9);
  const Tensor w0 = randn({6, 4}, kFloat64, &gen);
  const std::vector<std::vector<int64_t>> lookups = {{1, 3, 3}, {3, 0, 5}, {5, 3, 1}, {0, 0, 2}};
  auto index = [](const std::vector<int64_t>& v) {
    Tensor t = empty({static_cast<int64_t>(v.size())}, kInt64);
    for (size_t i = 0; i < v.size(); ++i) t.data_ptr<int64_t>()[i] = v[i];
    return t;
  };
  const Tensor probe = randn({3, 4}, kFloat64, &gen);
  Tensor w = w0.clone().requires_grad_();
  Tensor loss;
  for (size_t k = 0; k < lookups.size(); ++k) {
    const Tensor l = sum(embedding(w, index(lookups[k]), 3) * probe * static_cast<double>(k + 1));
    loss = loss.defined() ? loss + l : l;
  }
  loss.backward();
  Tensor want = zeros({6, 4}, kFloat64);
  for (size_t k = 0; k < lookups.size(); ++k) {
    Tensor wk = w0.clone().requires_grad_();
    sum(embedding(wk, index(lookups[k]), 3) * probe * static_cast<double>(k + 1)).backward();
    want = want + wk.grad();
  }
  EXPECT_TRUE(allclose(w.grad(), want, 1e-12, 1e-12));
  EXPECT_EQ(w.grad().select(0, 3).to_vector<double>(), (std::vector<double>{0, 0, 0, 0}));
}

TEST(Autograd, DiamondGraphSumsBothPaths) {
  Tensor x = full({2}, 2.0, kFloat64).requires_grad_();
  Tensor a = x * x;      // da/dx = 2x = 4
  Tensor b = exp(a);     // via a
  Tensor c = a * 3.0;    // via a
  sum(b + c).backward();
  const double expected = 4.0 * (std::exp(4.0) + 3.0);
  EXPECT_NEAR(x.grad().to_vector<double>()[0], expected, 1e-9);
}

}  // namespace
