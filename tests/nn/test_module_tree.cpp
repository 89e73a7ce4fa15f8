// Module mechanics on trees of the nn layers, checked against PyTorch where
// PyTorch has an answer: dotted parameter names, state_dict keys and shapes,
// parameter counts, printing, load_state_dict's strict errors; and locally:
// train/eval propagation, zero_grad, state_dict round trips, to(kFloat64),
// weight tying and the containers' indexing.
#include <gtest/gtest.h>

#include <sstream>

#include "nn/nn_test_util.h"

using namespace rnnkit;
using namespace rnnkit::testing::nn_util;
using rnnkit::testing::oracle;

namespace {

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::vector<std::string> names(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<std::string> out;
  for (const auto& kv : named) out.push_back(kv.first);
  return out;
}

json linear(int64_t in, int64_t out, bool bias = true) {
  return {{"type", "Linear"}, {"args", {in, out}}, {"kwargs", {{"bias", bias}}}};
}
json pair(const std::string& name, const json& spec) { return json::array({name, spec}); }

// A model like the ones users write: a named custom module with layers and containers inside.
json random_model(Generator& g) {
  const int64_t vocab = rnd(g, 5, 50), dim = rnd(g, 2, 16), hidden = rnd(g, 2, 16);
  json body = {{"type", "Sequential"},
               {"children", json::array({linear(dim, hidden, coin(g)),
                                         {{"type", "ReLU"}, {"kwargs", {{"inplace", coin(g)}}}},
                                         {{"type", "Dropout"}, {"kwargs", {{"p", uniform(g, 0, 0.9)}}}},
                                         {{"type", "LayerNorm"},
                                          {"args", json::array({json::array({hidden})})},
                                          {"kwargs", {{"eps", 1e-6}, {"elementwise_affine", coin(g)}}}},
                                         {{"type", "Tanh"}}})}};
  json heads = {
      {"type", "ModuleDict"},
      {"named", json::array({pair("score", linear(hidden, 1)), pair("classes", linear(hidden, vocab, false))})}};
  json convs = {
      {"type", "ModuleList"},
      {"children",
       json::array(
           {{{"type", "Conv1d"}, {"args", {dim, dim, 3}}, {"kwargs", {{"padding", 1}, {"groups", coin(g) ? 1 : dim}}}},
            {{"type", "Conv1d"}, {"args", {dim, hidden, 2}}, {"kwargs", {{"stride", 2}}}}})}};
  json inner = {{"type", "Custom"}, {"name", "Block"}, {"children", json::array({pair("act", {{"type", "Sigmoid"}})})}};
  return {
      {"type", "Custom"},
      {"name", "Net"},
      {"children",
       json::array({pair("encoder", {{"type", "Embedding"}, {"args", {vocab, dim}}, {"kwargs", {{"padding_idx", 0}}}}),
                    pair("body", body), pair("convs", convs), pair("heads", heads), pair("block", inner),
                    pair("out", {{"type", "LogSoftmax"}, {"kwargs", {{"dim", 1}}}})})}};
}

class ModuleTree : public SeededTest {};

TEST_F(ModuleTree, NamesKeysCountsAndPrintingMatchTorch) {
  TRACE_SEED();
  for (int trial = 0; trial < 6; ++trial) {
    const json spec = random_model(gen_);
    SCOPED_TRACE(spec.dump());
    auto model = build(spec, &gen_);
    StateDict want = oracle().call("nn_describe", {{"spec", spec}}, {});
    EXPECT_EQ(names(model->named_parameters()), lines(decode(want.at("param_names"))));
    EXPECT_EQ(model->state_dict().keys(), lines(decode(want.at("keys"))));
    for (const auto& [key, value] : model->state_dict())
      EXPECT_EQ(value.sizes(), want.at("init." + key).sizes()) << key;
    EXPECT_EQ(model->parameter_count(), static_cast<int64_t>(want.at("param_count").item()));
    EXPECT_EQ(to_string(*model), decode(want.at("repr")));
  }
}

TEST_F(ModuleTree, DottedNamesInsideContainers) {
  nn::Sequential seq(nn::Linear(3, 4), nn::ReLU(), nn::Linear(4, 2));
  EXPECT_EQ(names(seq->named_parameters()), (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}));
  auto net = std::make_shared<CustomImpl>("Net");
  net->add("encoder", nn::Linear(5, 3).ptr());
  net->add("seq", seq.ptr());
  EXPECT_EQ(names(net->named_parameters()), (std::vector<std::string>{"encoder.weight", "encoder.bias", "seq.0.weight",
                                                                      "seq.0.bias", "seq.2.weight", "seq.2.bias"}));
  EXPECT_EQ(nn::Linear(128, 10)->parameter_count(), 1290);
  EXPECT_EQ(nn::Linear(nn::LinearOptions(128, 10).bias(false))->parameter_count(), 1280);
}

TEST_F(ModuleTree, TrainEvalPropagates) {
  TRACE_SEED();
  auto model = build(random_model(gen_), &gen_);
  for (const auto& m : model->modules()) EXPECT_TRUE(m->is_training()) << m->name();
  model->eval();
  for (const auto& m : model->modules()) EXPECT_FALSE(m->is_training()) << m->name();
  model->train();
  for (const auto& m : model->modules()) EXPECT_TRUE(m->is_training()) << m->name();
  // Dropout inside a Sequential follows its parent's mode.
  nn::Sequential seq(nn::Dropout(0.9), nn::Linear(4, 4));
  Tensor x = random_tensor({3, 4}, kFloat32, gen_, 1, 2);
  seq->eval();
  EXPECT_TRUE(equal(seq->forward(x), seq->forward(x)));
  seq->train();
  Tensor d = seq->at<nn::DropoutImpl>(0).forward(x);
  EXPECT_GT(eq(d, 0.0).to(kInt64).sum().item(), 0);
}

TEST_F(ModuleTree, ZeroGrad) {
  TRACE_SEED();
  nn::Sequential seq(nn::Linear(3, 4), nn::Tanh(), nn::Linear(4, 2));
  seq->forward(random_tensor({5, 3}, kFloat32, gen_)).sum().backward();
  for (const auto& p : seq->parameters()) ASSERT_TRUE(p.grad().defined());
  seq->zero_grad(/*set_to_none=*/false);
  for (const auto& p : seq->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().abs().max().item(), 0.0);
  }
  seq->forward(random_tensor({5, 3}, kFloat32, gen_)).sum().backward();
  seq->zero_grad();  // PyTorch's default: set_to_none
  for (const auto& p : seq->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST_F(ModuleTree, StateDictRoundTripAndTo) {
  TRACE_SEED();
  const json spec = random_model(gen_);
  auto a = build(spec, &gen_), b = build(spec, &gen_);
  const std::vector<Tensor> handles = b->parameters();
  b->load_state_dict(a->state_dict());
  for (const auto& [key, value] : a->state_dict()) EXPECT_TRUE(equal(b->state_dict().at(key), value)) << key;
  const std::vector<Tensor> after = b->parameters();
  for (size_t i = 0; i < handles.size(); ++i) EXPECT_TRUE(handles[i].is_same(after[i])) << "handles stay valid";
  // to(kFloat64): parameters convert in place, the module computes in float64.
  auto seq = std::make_shared<nn::SequentialImpl>(nn::Linear(3, 4), nn::LayerNorm(nn::LayerNormOptions({4})),
                                                  nn::Conv1d(1, 2, 2));
  auto lin = seq->ptr<nn::LinearImpl>(0);
  seq->to(kFloat64);
  for (const auto& p : seq->parameters()) EXPECT_EQ(p.dtype(), kFloat64);
  EXPECT_EQ(lin->weight.dtype(), kFloat64) << "the module's own handle sees the conversion";
  Tensor y = seq->forward(random_tensor({1, 3}, kFloat64, gen_));
  EXPECT_EQ(y.dtype(), kFloat64);
  y.sum().backward();
  EXPECT_EQ(lin->weight.grad().dtype(), kFloat64);
  // Loss buffers convert too.
  nn::CrossEntropyLoss ce(nn::CrossEntropyLossOptions().weight(ones({3})));
  ce->to(kFloat64);
  EXPECT_EQ(ce->weight.dtype(), kFloat64);
  EXPECT_EQ(ce->state_dict().keys(), std::vector<std::string>{"weight"});
}

TEST_F(ModuleTree, LoadStateDictErrorsMatchTorch) {
  TRACE_SEED();
  const json spec = {{"type", "Sequential"},
                     {"children", json::array({linear(3, 4), {{"type", "ReLU"}}, linear(4, 2)})}};
  auto model = build(spec, &gen_);
  StateDict good = model->state_dict();
  struct Case {
    std::string what;
    StateDict state;
  };
  std::vector<Case> cases;
  {
    StateDict s = good;
    s.erase("2.bias");
    cases.push_back({"missing", s});
  }
  {
    StateDict s = good;
    s.insert("2.extra", zeros({1}));
    cases.push_back({"unexpected", s});
  }
  {
    StateDict s = good;
    s.insert("0.weight", zeros({4, 5}));
    cases.push_back({"size mismatch", s});
  }
  {
    StateDict s = good;
    s.erase("0.bias");
    s.insert("1.weight", zeros({2}));
    s.insert("2.weight", zeros({3, 4}));
    cases.push_back({"all three", s});
  }
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    StateDict want = oracle().call("nn_load_state_dict_error", {{"spec", spec}}, with_prefix(c.state, "p."));
    ASSERT_TRUE(want.contains("message"));
    try {
      model->load_state_dict(c.state);
      ADD_FAILURE() << "no error; PyTorch says: " << decode(want.at("message"));
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), decode(want.at("message")));
    }
  }
  // strict=false accepts missing and unexpected keys.
  StateDict partial = good;
  partial.erase("2.bias");
  partial.insert("extra", zeros({1}));
  EXPECT_NO_THROW(model->load_state_dict(partial, /*strict=*/false));
}

TEST_F(ModuleTree, WeightTyingListsOnce) {
  TRACE_SEED();
  // A language model's decoder sharing the embedding matrix.
  class TiedImpl : public nn::Module {
   public:
    TiedImpl() : nn::Module("Tied") {
      encoder = register_module("encoder", nn::Embedding(10, 4));
      decoder_weight = register_parameter("decoder_weight", encoder->weight);
    }
    nn::Embedding encoder;
    Tensor decoder_weight;
  };
  auto tied = std::make_shared<TiedImpl>();
  EXPECT_EQ(names(tied->named_parameters()), std::vector<std::string>{"decoder_weight"});  // own first, as PyTorch
  EXPECT_EQ(tied->parameter_count(), 40);
  EXPECT_EQ(tied->state_dict().keys(), (std::vector<std::string>{"decoder_weight", "encoder.weight"}));
  Tensor idx = from_vector(std::vector<int64_t>{1, 2}, {2});
  Tensor h = tied->encoder->forward(idx);
  nn::F::linear(h, tied->decoder_weight).sum().backward();
  EXPECT_TRUE(tied->encoder->weight.grad().defined()) << "both uses accumulate into one gradient";
}

TEST_F(ModuleTree, Containers) {
  TRACE_SEED();
  // Sequential: construction, push_back with names, negative index, typed access, insert, iteration.
  nn::Sequential seq(nn::Linear(3, 4), nn::ReLU());
  seq->push_back("out", nn::Linear(4, 2));
  seq->push_back(nn::Functional([](const Tensor& x) { return x * 2.0; }));
  EXPECT_EQ(seq->size(), 4u);
  EXPECT_EQ(seq[-2]->name(), "Linear");
  EXPECT_EQ(seq->at<nn::LinearImpl>(2).options.out_features(), 2);
  EXPECT_THROW(seq->at<nn::LinearImpl>(1), Error);
  EXPECT_THROW(seq[4], Error);
  Tensor x = random_tensor({2, 3}, kFloat32, gen_);
  Tensor expected = mul(seq->at<nn::LinearImpl>(2).forward(relu(seq->at<nn::LinearImpl>(0).forward(x))), 2.0);
  EXPECT_TRUE(allclose(seq->forward(x), expected));
  size_t count = 0;
  for (const auto& m : *seq) count += m != nullptr;
  EXPECT_EQ(count, 4u);
  EXPECT_EQ(to_string(*seq),
            "Sequential(\n  (0): Linear(in_features=3, out_features=4, bias=True)\n  (1): ReLU()\n  (out): "
            "Linear(in_features=4, out_features=2, bias=True)\n  (3): Functional()\n)");
  EXPECT_TRUE(nn::Sequential()->is_empty());

  // ModuleList: positional names follow inserts, like Python's list.insert.
  nn::ModuleList list(nn::Linear(1, 1), nn::Tanh());
  list->insert(1, nn::Sigmoid());
  list->insert(-1, nn::ReLU());
  list->append(nn::Dropout(0.1));
  std::vector<std::string> kinds, child_names;
  for (const auto& m : *list) kinds.push_back(m->name());
  for (const auto& kv : list->named_children()) child_names.push_back(kv.first);
  EXPECT_EQ(kinds, (std::vector<std::string>{"Linear", "Sigmoid", "ReLU", "Tanh", "Dropout"}));
  EXPECT_EQ(child_names, (std::vector<std::string>{"0", "1", "2", "3", "4"}));
  EXPECT_EQ(list[2]->name(), "ReLU");
  EXPECT_EQ(names(list->named_parameters()), (std::vector<std::string>{"0.weight", "0.bias"}));

  // ModuleDict: insertion order, replacement keeps the position, typed access.
  nn::ModuleDict dict;
  dict->insert("b", nn::Linear(2, 2));
  dict->insert("a", nn::ReLU());
  dict->insert("b", nn::Linear(2, 3));
  EXPECT_EQ(dict->keys(), (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(dict->at<nn::LinearImpl>("b").options.out_features(), 3);
  EXPECT_TRUE(dict->contains("a"));
  EXPECT_FALSE(dict->contains("c"));
  EXPECT_THROW((*dict)["c"], Error);
  EXPECT_EQ(names(dict->named_parameters()), (std::vector<std::string>{"b.weight", "b.bias"}));
  const json spec = {{"type", "ModuleDict"},
                     {"named", json::array({pair("b", linear(2, 3)), pair("a", {{"type", "ReLU"}})})}};
  EXPECT_EQ(to_string(*dict), decode(oracle().call("nn_describe", {{"spec", spec}}, {}).at("repr")));
}

TEST_F(ModuleTree, ReprOfEveryLayerMatchesTorch) {
  TRACE_SEED();
  std::vector<json> specs;
  for (int trial = 0; trial < 10; ++trial) {
    const int64_t groups = rnd(gen_, 1, 3);
    json conv_kwargs = {
        {"stride", rnd(gen_, 1, 3)},
        {"dilation", rnd(gen_, 1, 3)},
        {"groups", groups},
        {"bias", coin(gen_)},
        {"padding_mode", std::vector<std::string>{"zeros", "reflect", "replicate", "circular"}[rnd(gen_, 0, 3)]}};
    const int64_t pk = rnd(gen_, 0, 2);
    if (pk == 0) conv_kwargs["padding"] = rnd(gen_, 0, 3);
    if (pk == 1) conv_kwargs["padding"] = "valid";
    if (pk == 2 && conv_kwargs["stride"] == 1) conv_kwargs["padding"] = "same";
    specs.push_back({{"type", "Conv1d"},
                     {"args", {groups * rnd(gen_, 1, 4), groups * rnd(gen_, 1, 4), rnd(gen_, 1, 5)}},
                     {"kwargs", conv_kwargs}});
    json emb = {{"padding_idx", rnd(gen_, -5, 4)}, {"scale_grad_by_freq", coin(gen_)}};
    if (coin(gen_)) emb["max_norm"] = uniform(gen_, 0.1, 10);
    if (coin(gen_)) emb["norm_type"] = uniform(gen_, 1, 3);
    specs.push_back({{"type", "Embedding"}, {"args", {5, rnd(gen_, 1, 9)}}, {"kwargs", emb}});
    specs.push_back({{"type", "Dropout"}, {"kwargs", {{"p", uniform(gen_, 0, 1)}, {"inplace", coin(gen_)}}}});
    specs.push_back({{"type", "LayerNorm"},
                     {"args", json::array({json::array({rnd(gen_, 1, 5), rnd(gen_, 1, 5)})})},
                     {"kwargs", {{"eps", uniform(gen_, 1e-9, 1e-1)}, {"elementwise_affine", coin(gen_)}}}});
    specs.push_back({{"type", "ReLU"}, {"kwargs", {{"inplace", coin(gen_)}}}});
    specs.push_back({{"type", "Softmax"}, {"kwargs", {{"dim", rnd(gen_, -3, 3)}}}});
    specs.push_back({{"type", "LogSoftmax"}, {"kwargs", {{"dim", rnd(gen_, -3, 3)}}}});
    specs.push_back(linear(rnd(gen_, 1, 100), rnd(gen_, 1, 100), coin(gen_)));
  }
  for (const char* loss :
       {"CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss", "BCELoss", "MSELoss", "L1Loss", "SmoothL1Loss"})
    specs.push_back({{"type", loss}});
  specs.push_back({{"type", "Tanh"}});
  specs.push_back({{"type", "Sigmoid"}});
  json all = {{"type", "ModuleList"}, {"children", specs}};
  auto ours = build(all, &gen_);
  const std::string want = decode(oracle().call("nn_describe", {{"spec", all}}, {}).at("repr"));
  const auto got_lines = lines(to_string(*ours)), want_lines = lines(want);
  ASSERT_EQ(got_lines.size(), want_lines.size());
  for (size_t i = 0; i < got_lines.size(); ++i) EXPECT_EQ(got_lines[i], want_lines[i]);
}

}  // namespace
