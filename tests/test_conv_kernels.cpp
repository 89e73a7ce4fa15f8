// The float32 1-D convolution kernels on oneDNN's primitives (kernels/cpu/conv.h)
// against a direct double-precision reference, forward and both backward
// parts, on random shapes: groups, strides, dilations, uneven paddings, with
// and without bias, and a bias gradient the caller does not want.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/conv.h"
#include "rnnkit/threading.h"

namespace {

using rnnkit::kernels::cpu::Conv1dDims;

struct Reference {
  std::vector<double> y, dx, dw, db;
};

// Direct loops: y = conv(x, w) + b, and the gradients of sum(y * dy).
Reference reference(const Conv1dDims& d, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& b, const std::vector<float>& dy) {
  const int64_t Cg = d.C / d.groups, Og = d.O / d.groups;
  Reference r;
  r.y.assign(static_cast<size_t>(d.N * d.O * d.Lout), 0.0);
  r.dx.assign(x.size(), 0.0);
  r.dw.assign(w.size(), 0.0);
  r.db.assign(static_cast<size_t>(d.O), 0.0);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t o = 0; o < d.O; ++o)
      for (int64_t l = 0; l < d.Lout; ++l) {
        const size_t yi = static_cast<size_t>((n * d.O + o) * d.Lout + l);
        double acc = d.has_bias ? b[static_cast<size_t>(o)] : 0.0;
        const double g = dy[yi];
        r.db[static_cast<size_t>(o)] += g;
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t k = 0; k < d.K; ++k) {
            const int64_t pos = l * d.stride + k * d.dilation - d.pad_left;
            if (pos < 0 || pos >= d.L) continue;
            const size_t xi = static_cast<size_t>((n * d.C + (o / Og) * Cg + c) * d.L + pos);
            const size_t wi = static_cast<size_t>((o * Cg + c) * d.K + k);
            acc += static_cast<double>(w[wi]) * x[xi];
            r.dx[xi] += g * w[wi];
            r.dw[wi] += g * x[xi];
          }
        r.y[yi] = acc;
      }
  return r;
}

// max |got - want| / max(max |want|, 1)
double error(const std::vector<float>& got, const std::vector<double>& want) {
  double worst = 0, scale = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return worst / scale;
}

TEST(ConvKernels, OnednnPrimitivesMatchDirectReference) {
  std::mt19937_64 rng(20261207);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  int taken = 0;
  for (int trial = 0; trial < 40; ++trial) {
    Conv1dDims d;
    d.groups = pick(1, 3);
    d.C = d.groups * pick(1, 24);
    d.O = d.groups * pick(1, 24);
    d.K = pick(1, 5);
    d.N = pick(1, 5);
    d.stride = pick(1, 3);
    d.dilation = pick(1, 4);
    d.pad_left = pick(0, 4);
    d.pad_right = pick(0, 4);
    const int64_t span = d.dilation * (d.K - 1) + 1;
    d.L = std::max<int64_t>(span - d.pad_left - d.pad_right, 1) + pick(0, 60);
    d.Lout = (d.L + d.pad_left + d.pad_right - span) / d.stride + 1;
    d.has_bias = pick(0, 1) == 1;
    const int threads = static_cast<int>(pick(1, 2));
    SCOPED_TRACE(::testing::Message() << "N=" << d.N << " C=" << d.C << " L=" << d.L << " O=" << d.O << " K=" << d.K
                                      << " groups=" << d.groups << " stride=" << d.stride << " dilation=" << d.dilation
                                      << " pad=" << d.pad_left << "," << d.pad_right << " bias=" << d.has_bias
                                      << " threads=" << threads);
    rnnkit::set_num_threads(threads);
    auto random = [&](int64_t n) {
      std::vector<float> v(static_cast<size_t>(n));
      for (float& e : v) e = uni(rng);
      return v;
    };
    const std::vector<float> x = random(d.N * d.C * d.L), w = random(d.O * (d.C / d.groups) * d.K), b = random(d.O),
                             dy = random(d.N * d.O * d.Lout);
    const Reference want = reference(d, x, w, b, dy);
    std::vector<float> y(want.y.size(), NAN), dx(x.size(), NAN), dw(w.size(), NAN), db(b.size(), NAN);
    if (!rnnkit::kernels::cpu::conv1d_forward(d, x.data(), w.data(), d.has_bias ? b.data() : nullptr, y.data()))
      continue;  // oneDNN has no primitive here: the caller's im2col path runs instead
    ++taken;
    EXPECT_LT(error(y, want.y), 1e-5);
    ASSERT_TRUE(rnnkit::kernels::cpu::conv1d_backward_data(d, dy.data(), w.data(), dx.data()));
    EXPECT_LT(error(dx, want.dx), 1e-5);
    const bool want_db = d.has_bias && pick(0, 1) == 1;
    ASSERT_TRUE(rnnkit::kernels::cpu::conv1d_backward_weights(d, dy.data(), x.data(), dw.data(),
                                                              want_db ? db.data() : nullptr));
    EXPECT_LT(error(dw, want.dw), 1e-5);
    if (want_db) EXPECT_LT(error(db, want.db), 1e-5);
    if (!want_db) EXPECT_TRUE(std::all_of(db.begin(), db.end(), [](float v) { return std::isnan(v); }));
    // A forward whose bias presence disagrees with the dims is declined.
    EXPECT_FALSE(rnnkit::kernels::cpu::conv1d_forward(d, x.data(), w.data(), d.has_bias ? nullptr : b.data(),
                                                      y.data()));
  }
  rnnkit::set_num_threads(0);
  EXPECT_GT(taken, 30) << "oneDNN declined most shapes";
}

}  // namespace
