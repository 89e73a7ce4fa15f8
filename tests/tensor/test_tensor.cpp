// Tensor basics: factories, views (sharing storage), broadcasting, printing,
// generator reproducibility, and the error messages of bad calls.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <tuple>
#include <vector>

#include "kernels/cpu/rnn_simd.h"
#include "rnnkit/rnnkit.h"

using namespace rnnkit;

namespace {

// Expects `stmt` to throw rnnkit::Error whose message contains every fragment.
#define EXPECT_ERROR(stmt, ...)                                                   \
  do {                                                                            \
    try {                                                                         \
      stmt;                                                                       \
      ADD_FAILURE() << "expected rnnkit::Error from: " #stmt;                     \
    } catch (const rnnkit::Error& e) {                                            \
      for (const char* frag : {__VA_ARGS__})                                      \
        EXPECT_NE(std::string(e.what()).find(frag), std::string::npos)            \
            << "message '" << e.what() << "' lacks '" << frag << "'";             \
    }                                                                             \
  } while (0)

TEST(Tensor, FactoriesShapesAndValues) {
  Tensor z = zeros({2, 3});
  EXPECT_EQ(z.sizes(), (Shape{2, 3}));
  EXPECT_EQ(z.strides(), (Shape{3, 1}));
  EXPECT_EQ(z.dtype(), kFloat32);
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(ones({4}, kFloat64).sum().item(), 4.0);
  EXPECT_EQ(full({2, 2}, 2.5).sum().item(), 10.0);
  Tensor a = arange(5);
  EXPECT_EQ(a.dtype(), kInt64);
  EXPECT_EQ(a.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  Tensor f = arange(0.0, 1.0, 0.25, kFloat32);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{0, 0.25f, 0.5f, 0.75f}));
  Tensor v = from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(v.select(1, 2).to_vector<float>(), (std::vector<float>{3, 6}));
  EXPECT_EQ(tensor({1.0, 2.0}).dtype(), kFloat64);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor x = arange(0.0, 12.0, 1.0, kFloat32).view({3, 4});
  Tensor t = x.t();
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.sizes(), (Shape{4, 3}));
  EXPECT_EQ(t.select(0, 1).to_vector<float>(), (std::vector<float>{1, 5, 9}));
  Tensor n = x.narrow(1, 1, 2);
  n.fill_(-1);
  EXPECT_EQ(x.select(0, 2).to_vector<float>(), (std::vector<float>{8, -1, -1, 11}));
  Tensor s = x.slice(1, 0, 4, 2);
  EXPECT_EQ(s.to_vector<float>(), (std::vector<float>{0, -1, 4, -1, 8, -1}));
  Tensor e = tensor({1.0f, 2.0f}).unsqueeze(0).expand({3, 2});
  EXPECT_EQ(e.strides(), (Shape{0, 1}));
  EXPECT_EQ(e.sum().item(), 9.0);
  Tensor p = randn({2, 3, 4}).permute({2, 0, 1});
  EXPECT_EQ(p.sizes(), (Shape{4, 2, 3}));
  EXPECT_TRUE(allclose(p.contiguous().permute({1, 2, 0}), p.permute({1, 2, 0})));
  EXPECT_EQ(x.reshape({-1}).numel(), 12);
  EXPECT_EQ(t.reshape({12}).sizes(), (Shape{12}));  // copies: t is not viewable as 1-D
  EXPECT_EQ(x.unsqueeze(-1).sizes(), (Shape{3, 4, 1}));
  EXPECT_EQ(x.unsqueeze(-1).squeeze().sizes(), (Shape{3, 4}));
  EXPECT_EQ(x.chunk(2, 1)[1].sizes(), (Shape{3, 2}));
  EXPECT_EQ(x.split(3, 1).size(), 2u);
  EXPECT_EQ(x.unbind(0).size(), 3u);
  Tensor c = x.clone();
  c.fill_(0);
  EXPECT_NE(x.sum().item(), 0.0);
}

// add_ gives add's result whatever the layout: straight into self when both
// are contiguous on separate storages, through a copy otherwise (broadcast,
// strided, overlapping or of another dtype).
TEST(Tensor, InPlaceAddMatchesAdd) {
  Generator gen(11);
  for (Dtype dt : {kFloat32, kFloat64})
    for (int64_t n : {5, 70000})  // below and above the parallel threshold
      for (double alpha : {1.0, -0.37}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n) + " alpha=" + std::to_string(alpha));
        const Tensor a = randn({n}, dt, &gen), b = randn({n}, dt, &gen);
        Tensor x = a.clone();
        x.add_(b, alpha);
        EXPECT_TRUE(equal(x, add(a, b, alpha)));
        Tensor y = a.clone();  // the same storage on both sides
        y.add_(y, alpha);
        EXPECT_TRUE(equal(y, add(a, a, alpha)));
        Tensor z = a.clone();  // overlapping views: the old values are read
        z.narrow(0, 1, n - 1).add_(z.narrow(0, 0, n - 1), alpha);
        EXPECT_TRUE(equal(z.narrow(0, 1, n - 1), add(a.narrow(0, 1, n - 1), a.narrow(0, 0, n - 1), alpha)));
        EXPECT_EQ(z.select(0, 0).item(), a.select(0, 0).item());
        // Row broadcast (b the trailing dims of a: taken in place) and a
        // broadcast over leading dims that must not be (a column).
        const Tensor rows = randn({3, n}, dt, &gen), col = randn({3, 1}, dt, &gen);
        Tensor r = rows.clone();
        r.add_(b, alpha);
        EXPECT_TRUE(equal(r, add(rows, b, alpha)));
        Tensor c = rows.clone();
        c.add_(col, alpha);
        EXPECT_TRUE(equal(c, add(rows, col, alpha)));
      }
  Tensor m = zeros({3, 4}, kFloat32);
  m.add_(tensor({1.0f, 2.0f, 3.0f, 4.0f}));  // broadcast
  m.t().add_(ones({4, 3}, kFloat32), 2.0);     // strided self
  m.add_(ones({3, 4}, kFloat64));              // another dtype
  EXPECT_EQ(m.select(0, 2).to_vector<float>(), (std::vector<float>{4, 5, 6, 7}));
}

TEST(Tensor, BroadcastingAndDtypes) {
  Tensor a = ones({3, 1});
  Tensor b = arange(0.0, 4.0, 1.0, kFloat32);
  Tensor c = a + b;
  EXPECT_EQ(c.sizes(), (Shape{3, 4}));
  EXPECT_EQ(c.sum().item(), 3 * (4 + 6));
  Tensor m = gt(b, 1.5);
  EXPECT_EQ(m.dtype(), kBool);
  EXPECT_EQ(m.to(kInt64).to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1, 1}));
  Tensor w = where(m, b, zeros({1}));
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{0, 0, 2, 3}));
  EXPECT_EQ(b.to(kFloat64).dtype(), kFloat64);
  EXPECT_EQ(masked_fill(b, m, 9).to_vector<float>(), (std::vector<float>{0, 1, 9, 9}));
  auto mx = max(from_vector(std::vector<float>{1, 5, 2, 7, 0, 3}, {2, 3}), 1);
  EXPECT_EQ(mx.values.to_vector<float>(), (std::vector<float>{5, 7}));
  EXPECT_EQ(mx.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 0}));
}

TEST(Tensor, MatmulShapes) {
  EXPECT_EQ(matmul(randn({2, 3}), randn({3, 5})).sizes(), (Shape{2, 5}));
  EXPECT_EQ(matmul(randn({4, 2, 3}), randn({3, 5})).sizes(), (Shape{4, 2, 5}));
  EXPECT_EQ(matmul(randn({4, 2, 3}), randn({1, 3, 5})).sizes(), (Shape{4, 2, 5}));
  EXPECT_EQ(matmul(randn({3}), randn({3, 5})).sizes(), (Shape{5}));
  EXPECT_EQ(matmul(randn({3}), randn({3})).dim(), 0);
  Tensor a = from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  EXPECT_EQ(matmul(a, a.t()).to_vector<float>(), (std::vector<float>{5, 11, 11, 25}));
}

TEST(Tensor, GeneratorIsReproducible) {
  Generator g1(42), g2(42);
  EXPECT_TRUE(equal(randn({10}, {}, &g1), randn({10}, {}, &g2)));
  Generator g3(43);
  EXPECT_FALSE(equal(randn({10}, {}, &g1), randn({10}, {}, &g3)));
  auto st = g1.state();
  Tensor a = rand({5}, {}, &g1);
  g1.set_state(st);
  EXPECT_TRUE(equal(a, rand({5}, {}, &g1)));
  manual_seed(7);
  Tensor x = randn({3});
  manual_seed(7);
  EXPECT_TRUE(equal(x, randn({3})));
  Tensor r = rand({10000}, {}, &g1);
  EXPECT_GE(r.min().item(), 0.0);
  EXPECT_LT(r.max().item(), 1.0);
  EXPECT_NEAR(r.mean().item(), 0.5, 0.02);
  Tensor perm = randperm(10, &g1);
  std::vector<int64_t> pv = perm.to_vector<int64_t>();
  std::sort(pv.begin(), pv.end());
  EXPECT_EQ(pv, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

// fill_u64 continues the stream exactly as next_u64 calls would.
TEST(Tensor, GeneratorFillMatchesCalls) {
  Generator g1(9), g2(9);
  g1.next_u64();
  g2.next_u64();
  std::vector<uint64_t> block(1000);
  g1.fill_u64(block.data(), static_cast<int64_t>(block.size()));
  for (uint64_t v : block) ASSERT_EQ(v, g2.next_u64());
  EXPECT_EQ(g1.next_u64(), g2.next_u64());
  g1.fill_u64(block.data(), 0);
  EXPECT_EQ(g1.next_double(), g2.next_double());
}

// Float exp, tanh, sigmoid, softmax and log_softmax (the vector kernels where
// the CPU has them, else the C library) against the same ops in double, on
// every instruction set this CPU has, element by element: within the
// kernels' stated error (exp 1 ulp, tanh 2, sigmoid 3) and the roundings
// around them; long rows, and columns in two blocks, the last partial.
TEST(Tensor, FloatTranscendentalsMatchDoubleOnEveryIsa) {
  namespace simd = kernels::cpu::simd;
  const simd::Isa saved = simd::active_isa();
  Generator g(31);
  const Tensor x1 = rand({5000}, kFloat32, &g) * 160.0 - 80.0;  // exp over [-80, 80]
  const Tensor x2 = rand({5000}, kFloat32, &g) * 40.0 - 20.0;
  const Tensor rows = rand({3, 1000}, kFloat32, &g) * 20.0 - 10.0;
  const Tensor cols = rand({2, 9, 700}, kFloat32, &g) * 20.0 - 10.0;
  // Worst |got - want| / (scale * 2^-23) over the elements, want in double.
  auto worst_ulps = [](const Tensor& got, const Tensor& want, const Tensor& scale) {
    const std::vector<float> a = got.to_vector<float>();
    const std::vector<double> b = want.to_vector<double>(), s = scale.to_vector<double>();
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / (s[i] * 0x1p-23));
    return worst;
  };
  for (simd::Isa isa : {simd::Isa::kAvx512, simd::Isa::kAvx2, simd::Isa::kScalar}) {
    if (isa > simd::detected_isa()) continue;
    simd::set_active_isa(isa);
    SCOPED_TRACE(simd::isa_name(isa));
    auto d = [](const Tensor& t) { return t.to(kFloat64); };
    EXPECT_LE(worst_ulps(exp(x1), exp(d(x1)), abs(exp(d(x1)))), 1.0);
    EXPECT_LE(worst_ulps(tanh(x2), tanh(d(x2)), abs(tanh(d(x2)))), 2.0);
    EXPECT_LE(worst_ulps(sigmoid(x2), sigmoid(d(x2)), sigmoid(d(x2))), 3.0);
    for (const auto& [x, dim] : {std::pair<Tensor, int64_t>{rows, 1}, {cols, 1}}) {
      // Both shift x by its max in float (as PyTorch does), which rounds; the
      // references start from those shifted floats, in double. What remains:
      // softmax, the exps' ulp, their sum's and the scaling's; log_softmax,
      // the sum's ulp (2^-23 absolute in its log), the log's rounding and the
      // last subtraction's.
      const Tensor shifted = d(x - max(x, dim, true).values);
      const Tensor p = softmax(shifted, dim);
      EXPECT_LE(worst_ulps(softmax(x, dim), p, p), 3.0) << "softmax dim " << dim;
      const Tensor lp = log_softmax(shifted, dim);
      EXPECT_LE(worst_ulps(log_softmax(x, dim), lp, abs(lp) + abs(shifted) + 1.0), 1.0) << "log_softmax dim " << dim;
      EXPECT_LT(max(abs(sum(softmax(x, dim), {dim}) - 1.0)).item<double>(), 1e-6);
    }
  }
  simd::set_active_isa(saved);
}

// A row holding +inf or NaN, or only -inf, gives NaN throughout, as in
// PyTorch; the rows beside it are untouched. Long rows (the vector paths) and
// columns alike, on every instruction set.
TEST(Tensor, SoftmaxOfInfiniteAndNanRowsIsNan) {
  namespace simd = kernels::cpu::simd;
  const simd::Isa saved = simd::active_isa();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v(4 * 1000, 0.5f);
  v[700] = inf;                                         // row 0: +inf
  for (int i = 1000; i < 2000; ++i) v[i] = -inf;        // row 1: all -inf
  v[2000 + 999] = std::numeric_limits<float>::quiet_NaN();  // row 2: NaN last
  const Tensor rows = from_vector(v, {4, 1000});       // row 3: finite
  for (simd::Isa isa : {simd::Isa::kAvx512, simd::Isa::kAvx2, simd::Isa::kScalar}) {
    if (isa > simd::detected_isa()) continue;
    simd::set_active_isa(isa);
    SCOPED_TRACE(simd::isa_name(isa));
    for (bool log : {false, true})
      for (bool as_columns : {false, true}) {
        SCOPED_TRACE(std::string(log ? "log_softmax" : "softmax") + (as_columns ? " columns" : " rows"));
        const Tensor x = as_columns ? rows.t().contiguous() : rows;
        const int64_t dim = as_columns ? 0 : 1;
        Tensor y = log ? log_softmax(x, dim) : softmax(x, dim);
        if (as_columns) y = y.t().contiguous();
        const std::vector<float> out = y.to_vector<float>();
        for (int r = 0; r < 3; ++r)
          for (int c = 0; c < 1000; ++c) ASSERT_TRUE(std::isnan(out[r * 1000 + c])) << "row " << r << " col " << c;
        const float want = log ? -std::log(1000.f) : 1e-3f;
        for (int c = 0; c < 1000; ++c) ASSERT_NEAR(out[3000 + c], want, 1e-6) << "col " << c;
      }
  }
  simd::set_active_isa(saved);
}

TEST(Tensor, Printing) {
  std::ostringstream os;
  os << from_vector(std::vector<float>{0.1f, -2, 3, 4}, {2, 2});
  EXPECT_EQ(os.str(), "tensor([[ 0.1000, -2.0000],\n        [ 3.0000,  4.0000]])");
  std::ostringstream os2;
  os2 << tensor({int64_t{1}, int64_t{2}});
  EXPECT_EQ(os2.str(), "tensor([1, 2])");
  std::ostringstream os3;
  os3 << ones({2}).requires_grad_();
  EXPECT_EQ(os3.str(), "tensor([1.0000, 1.0000], requires_grad=True)");
}

TEST(TensorErrors, BadCallsThrowNamedErrors) {
  EXPECT_ERROR(zeros({2, 3}) + zeros({4}), "The size of tensor a (3) must match the size of tensor b (4)");
  EXPECT_ERROR(zeros({2, 3}).view({4, 2}), "view", "invalid for input of size 6");
  EXPECT_ERROR(zeros({2, 3}).t().view({6}), "view size is not compatible");
  EXPECT_ERROR(mm(zeros({2, 3}), zeros({2, 3})), "mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)");
  EXPECT_ERROR(zeros({2}).select(0, 5), "select", "index 5 out of range");
  EXPECT_ERROR(zeros({2}).transpose(0, 3), "Dimension out of range");
  EXPECT_ERROR(zeros({2, 3}).expand({4, 3}), "expanded size of the tensor (4) must match the existing size (2)");
  EXPECT_ERROR(zeros({2}, kInt64).requires_grad_(), "only Tensors of floating point dtype can require gradients");
  EXPECT_ERROR(cat({zeros({2, 3}), zeros({2, 4})}, 0), "Sizes of tensors must match except in dimension 0");
  EXPECT_ERROR(add(zeros({2}), zeros({2}, kFloat64)), "same dtype", "torch.float32", "torch.float64");
  EXPECT_ERROR(index_select(zeros({3}), 0, tensor({int64_t{3}})), "index out of range");
  EXPECT_ERROR(embedding(zeros({3, 2}), tensor({int64_t{5}})), "index out of range");
  EXPECT_ERROR(zeros({-1}), "negative dimension");
  EXPECT_ERROR(dropout(zeros({2}), 1.5, true), "dropout probability has to be between 0 and 1, but got 1.5");
  EXPECT_ERROR(zeros({2, 2}).item(), "cannot be converted to Scalar");
  EXPECT_ERROR(zeros({2}).data_ptr<double>(), "expected dtype torch.float64");
  EXPECT_ERROR(Tensor().sizes(), "undefined tensor");
  EXPECT_ERROR(log_softmax(zeros({2, 3}), 2), "Dimension out of range (expected to be in range of [-2, 1], but got 2)");
  Tensor leaf = zeros({2}).requires_grad_();
  EXPECT_ERROR(leaf.fill_(1), "a leaf Variable that requires grad is being used in an in-place operation");
}

}  // namespace
