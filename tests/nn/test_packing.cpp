// nn::utils::rnn: pack_padded_sequence, pad_packed_sequence, pad_sequence and
// pack_sequence against PyTorch (values, batch_sizes, permutations and
// gradients) on random batches; the layers on packed batches against running
// every sequence on its own; and the errors for bad lengths.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "nn/nn_test_util.h"
#include "nn/rnn_parity_cases.h"

namespace {

using namespace rnnkit;
namespace nn = rnnkit::nn;
namespace rnn = rnnkit::nn::utils::rnn;
using nlohmann::json;
using rnnkit::testing::oracle;
using rnnkit::testing::rnn::chance;
using rnnkit::testing::rnn::pick;

TEST(Packing, WorkedExample) {
  // lengths [3, 1, 2], time-major, one feature equal to 10*t + b.
  Tensor x = empty({3, 3, 1});
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t b = 0; b < 3; ++b) x[t][b][0].fill_(10.0 * t + b);
  rnn::PackedSequence p = rnn::pack_padded_sequence(x, std::vector<int64_t>{3, 1, 2}, false, false);
  EXPECT_EQ(p.data.to_vector<float>(), (std::vector<float>{0, 2, 1, 10, 12, 20}));
  EXPECT_EQ(p.batch_sizes.to_vector<int64_t>(), (std::vector<int64_t>{3, 2, 1}));
  EXPECT_EQ(p.sorted_indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 2, 1}));
  EXPECT_EQ(p.unsorted_indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 2, 1}));
  rnn::PaddedSequence back = rnn::pad_packed_sequence(p, true, -1.0);
  EXPECT_EQ(back.padded.sizes(), (Shape{3, 3, 1}));
  EXPECT_EQ(back.padded.to_vector<float>(), (std::vector<float>{0, 10, 20, 1, -1, -1, 2, 12, -1}));
  EXPECT_EQ(back.lengths.to_vector<int64_t>(), (std::vector<int64_t>{3, 1, 2}));
  // Token ids pack too (no gradient involved).
  rnn::PackedSequence ids = rnn::pack_padded_sequence(x.to(kInt64), std::vector<int64_t>{3, 1, 2}, false, false);
  EXPECT_EQ(ids.data.to_vector<int64_t>(), (std::vector<int64_t>{0, 2, 1, 10, 12, 20}));
  // enforce_sorted=true keeps no permutation.
  rnn::PackedSequence s = rnn::pack_padded_sequence(x, from_vector(std::vector<int64_t>{3, 2, 1}));
  EXPECT_FALSE(s.sorted_indices.defined());
  EXPECT_FALSE(s.unsorted_indices.defined());
}

// Random batches (trailing dims, batch_first, sorted or not, total_length,
// padding_value) against PyTorch, with gradients through pack -> pad.
TEST(Packing, PackAndPadMatchPyTorch) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 60; ++i) {
    const Dtype dtype = i % 2 ? kFloat64 : kFloat32;
    const bool bf = chance(rng, 0.5), sorted = chance(rng, 0.3);
    const int64_t T = pick(rng, 1, 6), N = pick(rng, 1, 6);
    Shape shape = bf ? Shape{N, T} : Shape{T, N};
    for (int64_t d = 0, extra = pick(rng, 0, 2); d < extra; ++d) shape.push_back(pick(rng, 1, 3));
    std::vector<int64_t> lengths;
    for (int64_t b = 0; b < N; ++b) lengths.push_back(pick(rng, 1, T));
    if (sorted) std::sort(lengths.rbegin(), lengths.rend());
    const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
    const int64_t total = chance(rng, 0.5) ? pick(rng, longest, T + 2) : -1;
    const double padding = chance(rng, 0.5) ? 0.0 : -2.5;
    json cfg = {{"op", "pack_pad"}, {"batch_first", bf}, {"enforce_sorted", sorted}, {"padding_value", padding}};
    if (total >= 0) cfg["total_length"] = total;
    SCOPED_TRACE(cfg.dump() + " shape " + shape_str(shape));
    Tensor x = randn(shape, dtype).requires_grad_();
    rnn::PackedSequence p = rnn::pack_padded_sequence(x, lengths, bf, sorted);
    rnn::PaddedSequence padded = rnn::pad_packed_sequence(p, bf, padding, total);
    Tensor g = randn(padded.padded.sizes(), dtype);
    sum(mul(padded.padded, g)).backward();
    StateDict in;
    in.insert("x", x.detach());
    in.insert("lengths", from_vector(lengths, {N}));
    in.insert("g", g);
    StateDict want = oracle().call("packing", cfg, in);
    EXPECT_CLOSE(p.data, want.at("data"), 0, "pack data");
    EXPECT_TRUE(equal(p.batch_sizes, want.at("batch_sizes")));
    if (!sorted) {
      // PyTorch's sort is not stable for long batches; equal lengths may come in
      // another order, so the permutation must only sort the same lengths.
      const std::vector<int64_t> ours = p.sorted_indices.to_vector<int64_t>();
      const std::vector<int64_t> theirs = want.at("sorted_indices").to_vector<int64_t>();
      for (size_t j = 0; j < ours.size(); ++j) EXPECT_EQ(lengths[ours[j]], lengths[theirs[j]]);
    } else {
      EXPECT_FALSE(want.contains("sorted_indices"));
    }
    EXPECT_CLOSE(padded.padded, want.at("padded"), 0, "pad_packed padded");
    EXPECT_TRUE(equal(padded.lengths, want.at("lengths")));
    EXPECT_CLOSE(x.grad(), want.at("grad_x"), 0, "pack/pad grad_x");
  }
}

TEST(Packing, PadSequenceAndPackSequenceMatchPyTorch) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 40; ++i) {
    const bool pack = i % 2 == 1, bf = chance(rng, 0.5), sorted = chance(rng, 0.3);
    const int64_t count = pick(rng, 1, 5);
    Shape trailing;
    for (int64_t d = 0, extra = pick(rng, 0, 2); d < extra; ++d) trailing.push_back(pick(rng, 1, 3));
    std::vector<int64_t> lengths;
    for (int64_t j = 0; j < count; ++j) lengths.push_back(pick(rng, 1, 5));
    if (sorted) std::sort(lengths.rbegin(), lengths.rend());
    std::vector<Tensor> seqs;
    StateDict in;
    for (int64_t j = 0; j < count; ++j) {
      Shape s = trailing;
      s.insert(s.begin(), lengths[j]);
      seqs.push_back(randn(s, kFloat64).requires_grad_());
      in.insert("s" + std::to_string(j), seqs.back().detach());
    }
    json cfg = {{"op", pack ? "pack_sequence" : "pad_sequence"}, {"batch_first", bf}, {"enforce_sorted", sorted},
                {"padding_value", 1.5}, {"count", count}};
    SCOPED_TRACE(cfg.dump());
    Tensor out;
    if (pack) {
      rnn::PackedSequence p = rnn::pack_sequence(seqs, sorted);
      out = p.data;
    } else {
      out = rnn::pad_sequence(seqs, bf, 1.5);
    }
    Tensor g = randn(out.sizes(), kFloat64);
    in.insert("g", g);
    sum(mul(out, g)).backward();
    StateDict want = oracle().call("packing", cfg, in);
    if (pack && !sorted) {
      // Ties may be ordered differently (see above): compare the padded form instead.
      EXPECT_EQ(out.sizes(), want.at("out").sizes());
    } else {
      EXPECT_CLOSE(out, want.at("out"), 0, pack ? "pack_sequence" : "pad_sequence");
    }
    for (int64_t j = 0; j < count; ++j)
      EXPECT_CLOSE(seqs[j].grad(), want.at("grad_s" + std::to_string(j)), 1e-15, "pad/pack_sequence grads");
  }
}

// Packed batches through the layers: each sequence's output and final state
// equal what the layer gives for that sequence alone (unbatched), for every
// cell type, both directions and several layers; h0 follows the user's order.
TEST(Packing, LayersOnPackedBatchesEqualPerSequenceRuns) {
  const uint64_t seed = rnnkit::testing::fresh_seed();
  SCOPED_TRACE("RNNKIT_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 30; ++i) {
    const char* kinds[] = {"RNN", "LSTM", "GRU"};
    json c = rnnkit::testing::rnn::random_config(kinds[i % 3], rng);
    c["dropout"] = 0.0;
    c["batch_first"] = false;
    SCOPED_TRACE(c.dump());
    Generator gen(rng());
    auto m = rnnkit::testing::rnn::build_model(c, &gen);
    m.module->to(kFloat64);
    const int64_t T = pick(rng, 1, 6), N = pick(rng, 1, 5), I = c["input_size"], H = c["hidden_size"];
    const int64_t D = c["bidirectional"].get<bool>() ? 2 : 1, L = c["num_layers"], P = c["proj_size"];
    const int64_t Hout = P > 0 ? P : H;
    const bool lstm = c["kind"] == "LSTM";
    std::vector<int64_t> lengths;
    for (int64_t b = 0; b < N; ++b) lengths.push_back(pick(rng, 1, T));
    Tensor x = randn({T, N, I}, kFloat64, &gen);
    Tensor h0 = randn({D * L, N, Hout}, kFloat64, &gen), c0 = randn({D * L, N, H}, kFloat64, &gen);
    auto packed = rnn::pack_padded_sequence(x, lengths, false, false);
    nn::PackedRNNOutput r = m.forward_packed(packed, h0, lstm ? c0 : Tensor());
    EXPECT_TRUE(equal(r.output.batch_sizes, packed.batch_sizes));
    EXPECT_TRUE(equal(r.output.sorted_indices, packed.sorted_indices));
    Tensor padded = rnn::pad_packed_sequence(r.output, false, 0.0, T).padded;
    for (int64_t b = 0; b < N; ++b) {
      Tensor xb = x.select(1, b).narrow(0, 0, lengths[b]);
      nn::RNNOutput one = m.forward(xb, h0.select(1, b), lstm ? c0.select(1, b) : Tensor());
      EXPECT_TRUE(allclose(padded.select(1, b).narrow(0, 0, lengths[b]), one.output, 1e-12, 1e-12)) << "b=" << b;
      EXPECT_TRUE(allclose(r.h_n.select(1, b), one.h_n, 1e-12, 1e-12)) << "h_n b=" << b;
      if (lstm) EXPECT_TRUE(allclose(r.c_n.select(1, b), one.c_n, 1e-12, 1e-12)) << "c_n b=" << b;
    }
  }
}

TEST(Packing, EnforceSortedPackedBatchesRunWithoutPermutation) {
  nn::LSTM lstm(nn::LSTMOptions(3, 4).bidirectional(true));
  Tensor x = randn({4, 3, 3}).requires_grad_();
  auto packed = rnn::pack_padded_sequence(x, std::vector<int64_t>{4, 2, 1});
  auto [out, h_n, c_n] = lstm->forward(packed);
  EXPECT_EQ(out.data.sizes(), (Shape{7, 8}));
  EXPECT_FALSE(out.sorted_indices.defined());
  sum(h_n).backward();
  // The padding steps of the input get no gradient.
  EXPECT_EQ(x.grad()[3][1].abs().max().item(), 0.0);
  EXPECT_GT(x.grad()[1][1].abs().max().item(), 0.0);
}

TEST(Packing, BadLengthsThrow) {
  Tensor x = randn({5, 3, 4});
  using V = std::vector<int64_t>;
  EXPECT_ERROR(rnn::pack_padded_sequence(x, V{3, 5, 2}),
               "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can pass "
               "`enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep this requirement if "
               "you do not need ONNX exportability.");
  EXPECT_ERROR(rnn::pack_padded_sequence(x, V{5, 3, 0}),
               "Length of all samples has to be greater than 0, but found an element in 'lengths' that is <= 0");
  EXPECT_ERROR(rnn::pack_padded_sequence(x, V{5, -1, 3}, false, false),
               "Length of all samples has to be greater than 0");
  EXPECT_ERROR(rnn::pack_padded_sequence(x, V{6, 3, 2}), "lengths[0] = 6 is longer than the input's sequence length 5");
  EXPECT_ERROR(rnn::pack_padded_sequence(randn({3, 2, 4}), V{1, 3, 2}, /*batch_first=*/true, false),
               "lengths[1] = 3 is longer than the input's sequence length 2");
  EXPECT_ERROR(rnn::pack_padded_sequence(x, V{5, 3}), "Expected `len(lengths)` to be equal to batch_size, but got 2 (batch_size=3)");
  EXPECT_ERROR(rnn::pack_padded_sequence(x, tensor({5.f, 3.f, 2.f})),
               "'lengths' argument should be a 1D CPU int64 tensor, but got 1D cpu Float tensor");
  EXPECT_ERROR(rnn::pack_padded_sequence(x, from_vector(V{5, 3, 2}, {1, 3})),
               "'lengths' argument should be a 1D CPU int64 tensor, but got 2D cpu Long tensor");
  EXPECT_ERROR(rnn::pack_padded_sequence(randn({5}), V{5}), "input must have at least 2 dimensions");
  auto p = rnn::pack_padded_sequence(x, V{5, 3, 2});
  EXPECT_ERROR(rnn::pad_packed_sequence(p, false, 0.0, 3),
               "Expected total_length to be at least the length of the longest sequence in input, but got "
               "total_length=3 and max sequence length being 5");
  EXPECT_ERROR(rnn::pad_sequence({}), "received an empty list of sequences");
  EXPECT_ERROR(rnn::pad_sequence({randn({3, 4}), randn({2, 5})}), "sequence 1 has shape [2, 5]");
  EXPECT_ERROR(rnn::pack_sequence({randn({3, 4}), randn({0, 4})}), "Length of all samples has to be greater than 0");
}

}  // namespace
