// Live parity of nn::utils::clip_grad_norm_ and clip_grad_value_ with
// torch.nn.utils: every norm type (2, 1, inf, -inf, 0 and general p), float32
// and float64, clipping and not clipping, parameters without a gradient, the
// returned total norm and the clipped gradients; non-finite norms with and
// without error_if_nonfinite (PyTorch's message).
#include <gtest/gtest.h>

#include <cmath>

#include "rnnkit/nn/utils/clip_grad.h"
#include "support/oracle.h"

using namespace rnnkit;
using nlohmann::json;
using rnnkit::testing::oracle;

namespace {

int64_t rnd(Generator& g, int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(g.next_below(hi - lo + 1)); }

// Norm types as JSON (strings for the infinities, which JSON cannot hold).
json norm_json(double p) {
  if (std::isinf(p)) return p > 0 ? "inf" : "-inf";
  return p;
}

struct Problem {
  std::vector<Tensor> params;
  StateDict inputs;
  json cfg;
};

Problem make_problem(Generator& gen, Dtype dtype) {
  Problem pb;
  const int n = static_cast<int>(rnd(gen, 1, 4));
  json shapes = json::array(), no_grad = json::array();
  for (int i = 0; i < n; ++i) {
    Shape shape(rnd(gen, 1, 3));
    for (auto& d : shape) d = rnd(gen, 1, 9);
    shapes.push_back(shape);
    Tensor p = zeros(shape, dtype).requires_grad_();
    if (n > 1 && gen.next_below(4) == 0) {
      no_grad.push_back(i);
    } else {
      Tensor g = randn(shape, dtype, &gen) * static_cast<double>(rnd(gen, 1, 3));
      pb.inputs.insert("g" + std::to_string(i), g);
      p.set_grad(g.clone());
    }
    pb.params.push_back(p);
  }
  pb.cfg = {{"num_params", n},
            {"shapes", shapes},
            {"no_grad", no_grad},
            {"dtype", dtype == kFloat32 ? "float32" : "float64"}};
  return pb;
}

class ClipGradParity : public ::testing::TestWithParam<Dtype> {};

TEST_P(ClipGradParity, NormForEveryNormType) {
  const Dtype dtype = GetParam();
  const double tol = dtype == kFloat32 ? 1e-6 : 1e-12;
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " (rerun with RNNKIT_TEST_SEED)");
  Generator gen(seed);
  for (const double p : {2.0, 1.0, double(INFINITY), -double(INFINITY), 0.0, 3.5, 0.5}) {
    for (int rep = 0; rep < 4; ++rep) {
      Problem pb = make_problem(gen, dtype);
      // Half the time max_norm is below the total norm (clips), half above (no-op).
      const double max_norm = rep % 2 ? 1e6 : 0.05 + gen.next_double();
      pb.cfg["mode"] = "norm";
      pb.cfg["max_norm"] = max_norm;
      pb.cfg["norm_type"] = norm_json(p);
      const std::string label = "clip_grad_norm_ p=" + std::to_string(p) + (dtype == kFloat32 ? " f32" : " f64");
      SCOPED_TRACE(label + " " + pb.cfg.dump());
      StateDict ref = oracle().call("clip_grad", pb.cfg, pb.inputs);
      const double total = nn::utils::clip_grad_norm_(pb.params, max_norm, p);
      EXPECT_CLOSE(scalar_tensor(total, kFloat64), ref.at("total_norm"), tol, label + " total_norm");
      for (size_t i = 0; i < pb.params.size(); ++i) {
        const std::string key = "g" + std::to_string(i);
        if (!ref.contains(key)) {
          EXPECT_FALSE(pb.params[i].grad().defined());
          continue;
        }
        EXPECT_CLOSE(pb.params[i].grad(), ref.at(key), tol, label + " grads[" + key + "]");
      }
    }
  }
}

TEST_P(ClipGradParity, Value) {
  const Dtype dtype = GetParam();
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " (rerun with RNNKIT_TEST_SEED)");
  Generator gen(seed);
  for (int rep = 0; rep < 8; ++rep) {
    Problem pb = make_problem(gen, dtype);
    const double clip = 0.01 + 2 * gen.next_double();
    pb.cfg["mode"] = "value";
    pb.cfg["clip_value"] = clip;
    StateDict ref = oracle().call("clip_grad", pb.cfg, pb.inputs);
    nn::utils::clip_grad_value_(pb.params, clip);
    for (size_t i = 0; i < pb.params.size(); ++i) {
      const std::string key = "g" + std::to_string(i);
      if (ref.contains(key))
        EXPECT_CLOSE(pb.params[i].grad(), ref.at(key), 0.0,
                     std::string("clip_grad_value_") + (dtype == kFloat32 ? " f32" : " f64"));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ClipGradParity, ::testing::Values(kFloat32, kFloat64),
                         [](const auto& info) { return info.param == kFloat32 ? "float32" : "float64"; });

// Same values, NaN where PyTorch has NaN.
void expect_same_with_nan(const Tensor& got, const Tensor& want, const std::string& what) {
  const auto a = got.to_vector<double>(), b = want.to_vector<double>();
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(b[i])) {
      EXPECT_TRUE(std::isnan(a[i])) << what << " element " << i;
    } else {
      EXPECT_EQ(a[i], b[i]) << what << " element " << i;
    }
  }
}

TEST(ClipGradNonFinite, ErrorOrScaleLikePyTorch) {
  for (const double bad : {double(INFINITY), double(NAN)}) {
    for (const double p : {2.0, double(INFINITY)}) {
      SCOPED_TRACE("bad=" + std::to_string(bad) + " p=" + std::to_string(p));
      Tensor a = zeros({2, 3}).requires_grad_(), b = zeros({4}).requires_grad_();
      Tensor ga = from_vector(std::vector<float>{1, -2, 3, 0.5f, static_cast<float>(bad), 1}, {2, 3});
      Tensor gb = from_vector(std::vector<float>{0.25f, -1, 2, 4}, {4});
      json cfg = {{"num_params", 2}, {"shapes", {{2, 3}, {4}}},   {"dtype", "float32"},        {"mode", "norm"},
                  {"max_norm", 1.0}, {"norm_type", norm_json(p)}, {"error_if_nonfinite", true}};
      StateDict inputs;
      inputs.insert("g0", ga);
      inputs.insert("g1", gb);

      a.set_grad(ga.clone());
      b.set_grad(gb.clone());
      std::string ours, theirs;
      try {
        nn::utils::clip_grad_norm_({a, b}, 1.0, p, /*error_if_nonfinite=*/true);
      } catch (const Error& e) {
        ours = e.what();
      }
      try {
        oracle().call("clip_grad", cfg, inputs);
      } catch (const Error& e) {
        theirs = e.what();
      }
      ASSERT_FALSE(ours.empty()) << "no error for a non-finite total norm";
      ASSERT_FALSE(theirs.empty());
      EXPECT_NE(theirs.find("RuntimeError: " + ours + "\n"), std::string::npos) << ours << "\n---\n" << theirs;
      expect_same_with_nan(a.grad(), ga, "g0 after the error (must be unchanged)");

      // Without the flag both scale by the non-finite coefficient.
      cfg["error_if_nonfinite"] = false;
      StateDict ref = oracle().call("clip_grad", cfg, inputs);
      const double total = nn::utils::clip_grad_norm_({a, b}, 1.0, p);
      expect_same_with_nan(scalar_tensor(total, kFloat64), ref.at("total_norm"), "total_norm");
      expect_same_with_nan(a.grad(), ref.at("g0"), "g0");
      expect_same_with_nan(b.grad(), ref.at("g1"), "g1");
    }
  }
}

TEST(ClipGrad, EdgeCases) {
  // No gradients at all: total norm 0, nothing to do.
  Tensor a = ones({3}).requires_grad_();
  EXPECT_EQ(nn::utils::clip_grad_norm_(std::vector<Tensor>{a}, 1.0), 0.0);
  // A single tensor, a strided gradient.
  Tensor g = from_vector(std::vector<float>{3, 4, 0, 0}, {2, 2}).t();  // [[3, 0], [4, 0]]
  ASSERT_FALSE(g.is_contiguous());
  Tensor w = zeros({2, 2}).requires_grad_();
  w.set_grad(g);
  const double total = nn::utils::clip_grad_norm_(w, 1.0);
  EXPECT_FLOAT_EQ(static_cast<float>(total), 5.0f);
  EXPECT_NEAR(w.grad().to_vector<float>()[2], 0.8, 1e-6);  // 4 scaled by 1/5
  nn::utils::clip_grad_value_(w, 0.1);
  for (float v : w.grad().to_vector<float>()) EXPECT_LE(std::abs(v), 0.1f);
}

}  // namespace
