// A whole word-level language model's training step, rnnkit against PyTorch in
// the same run: Embedding -> Dropout -> stacked LSTM (inter-layer dropout) ->
// Dropout -> Linear -> CrossEntropyLoss, with the hidden state carried between
// batches and detached (truncated backpropagation through time), backward,
// clip_grad_norm_ and an SGD step: the classic word_language_model recipe
// (default: its medium configuration, 10000 tokens, 650 units, 2 layers,
// bptt 35, batch 20). Also the evaluation forward (eval mode, no graph).
// Medians in ms per batch and the ratio rnnkit / PyTorch (< 1 is faster);
// tokens are random (speed does not depend on them). PyTorch runs in
// /usr/bin/python3 (bench/py/bench_lm.py) with OPENBLAS_CORETYPE unset, once
// with 1 and once with 2 threads; rnnkit with 1 and 2 OpenMP threads; each
// side's better time counts.
//
//   bench_lm [--ntoken 10000] [--emsize 650] [--nhid 650] [--layers 2] [--bptt 35]
//            [--batch 20] [--dropout 0.5] [--reps 20] [--script path/to/bench_lm.py] [--no-torch]
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "rnnkit/autograd/node.h"
#include "rnnkit/nn/dropout.h"
#include "rnnkit/nn/embedding.h"
#include "rnnkit/nn/linear.h"
#include "rnnkit/nn/loss.h"
#include "rnnkit/nn/rnn.h"
#include "rnnkit/rnnkit.h"
#include "rnnkit/threading.h"
#include "torch_script.h"

namespace {

using rnnkit::bench::median_ms;
using rnnkit::bench::option_value;
using rnnkit::bench::positive_option;

constexpr const char* kTool = "bench_lm";

using namespace rnnkit;
using nlohmann::json;

struct Settings {
  int64_t ntoken = 10000, emsize = 650, nhid = 650, layers = 2, bptt = 35, batch = 20, reps = 20;
  double dropout = 0.5;
  std::string script;
  bool torch = true;
};

class WordLMImpl : public nn::Module {
 public:
  explicit WordLMImpl(const Settings& s) : Module("WordLM") {
    drop = register_module("drop", nn::Dropout(s.dropout));
    encoder = register_module("encoder", nn::Embedding(s.ntoken, s.emsize));
    rnn = register_module("rnn", nn::LSTM(nn::LSTMOptions(s.emsize, s.nhid).num_layers(s.layers).dropout(s.dropout)));
    decoder = register_module("decoder", nn::Linear(s.nhid, s.ntoken));
  }
  // x [bptt, batch] token ids -> logits [bptt * batch, ntoken].
  Tensor forward(const Tensor& x, nn::LSTMState* hidden) {
    auto [output, h_n, c_n] = rnn->forward(drop->forward(encoder->forward(x)), *hidden);
    *hidden = {h_n.detach(), c_n.detach()};
    Tensor out = drop->forward(output);
    return decoder->forward(out.reshape({-1, out.size(2)}));
  }
  nn::Dropout drop{nullptr};
  nn::Embedding encoder{nullptr};
  nn::LSTM rnn{nullptr};
  nn::Linear decoder{nullptr};
};
RNNKIT_MODULE(WordLM);

struct Timing {
  double train_ms = -1, eval_ms = -1;
};

Timing run_rnnkit(const Settings& s, int threads) {
  set_num_threads(threads);
  manual_seed(1);
  WordLM model(s);
  optim::SGD opt(model->parameters(), optim::SGDOptions(20.0));
  nn::CrossEntropyLoss criterion;
  Generator gen(3);
  // [bptt + 1, batch] random ids: inputs are rows [0, bptt), targets [1, bptt].
  Tensor data = empty({s.bptt + 1, s.batch}, kInt64);
  int64_t* d = data.data_ptr<int64_t>();
  for (int64_t i = 0; i < data.numel(); ++i) d[i] = static_cast<int64_t>(gen.next_below(s.ntoken));
  const Tensor input = data.narrow(0, 0, s.bptt), target = data.narrow(0, 1, s.bptt).reshape({-1});
  nn::LSTMState hidden;
  Timing t;
  t.train_ms = median_ms(
      [&] {
        opt.zero_grad();
        Tensor loss = criterion->forward(model->forward(input, &hidden), target);
        loss.backward();
        nn::utils::clip_grad_norm_(model->parameters(), 0.25);
        opt.step();
      },
      s.reps, 2);
  model->eval();
  t.eval_ms = median_ms(
      [&] {
        NoGradGuard no_grad;
        Tensor loss = criterion->forward(model->forward(input, &hidden), target);
        (void)loss.item();
      },
      s.reps, 2);
  set_num_threads(0);
  return t;
}

// Runs the PyTorch script with `threads` threads; returns its JSON (null on failure).
json run_torch(const Settings& s, int threads) {
  const json cfg = {{"ntoken", s.ntoken}, {"emsize", s.emsize}, {"nhid", s.nhid},       {"layers", s.layers},
                    {"bptt", s.bptt},     {"batch", s.batch},   {"dropout", s.dropout}, {"reps", s.reps},
                    {"threads", threads}};
  return rnnkit::bench::run_torch_script(s.script, cfg, threads, "bench_lm");
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  s.script = rnnkit::bench::bench_script_path("bench_lm.py");
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--ntoken") s.ntoken = positive_option(argc, argv, i, kTool);
    else if (a == "--emsize") s.emsize = positive_option(argc, argv, i, kTool);
    else if (a == "--nhid") s.nhid = positive_option(argc, argv, i, kTool);
    else if (a == "--layers") s.layers = positive_option(argc, argv, i, kTool);
    else if (a == "--bptt") s.bptt = positive_option(argc, argv, i, kTool);
    else if (a == "--batch") s.batch = positive_option(argc, argv, i, kTool);
    else if (a == "--reps") s.reps = positive_option(argc, argv, i, kTool);
    else if (a == "--dropout") {
      const std::string v = option_value(argc, argv, i, kTool);
      s.dropout = std::atof(v.c_str());
      if (!(s.dropout >= 0 && s.dropout < 1)) {
        std::cerr << "bench_lm: --dropout expects a probability in [0, 1), got '" << v << "'\n";
        return 2;
      }
    } else if (a == "--script") s.script = option_value(argc, argv, i, kTool);
    else if (a == "--no-torch") s.torch = false;
    else {
      std::cerr << "usage: bench_lm [--ntoken N] [--emsize E] [--nhid H] [--layers L] [--bptt T] [--batch N] "
                   "[--dropout P] [--reps R] [--script PATH] [--no-torch]\n";
      return 2;
    }
  }
  std::printf("word LM: Embedding(%lld, %lld) -> LSTM(%lld, %lld layers, dropout %.2f) -> Linear(%lld, %lld), "
              "bptt %lld, batch %lld; SGD, clip_grad_norm_ 0.25\n",
              static_cast<long long>(s.ntoken), static_cast<long long>(s.emsize), static_cast<long long>(s.nhid),
              static_cast<long long>(s.layers), s.dropout, static_cast<long long>(s.nhid),
              static_cast<long long>(s.ntoken), static_cast<long long>(s.bptt), static_cast<long long>(s.batch));
  Timing best;
  int best_train_threads = 0, best_eval_threads = 0;
  for (int threads : {1, 2}) {
    const Timing t = run_rnnkit(s, threads);
    if (best.train_ms < 0 || t.train_ms < best.train_ms) best.train_ms = t.train_ms, best_train_threads = threads;
    if (best.eval_ms < 0 || t.eval_ms < best.eval_ms) best.eval_ms = t.eval_ms, best_eval_threads = threads;
  }
  double torch_train = -1, torch_eval = -1;
  int torch_train_threads = 0, torch_eval_threads = 0;
  std::string version = "not run";
  if (s.torch)
    for (int threads : {1, 2}) {
      const json j = run_torch(s, threads);
      if (j.is_null() || j.is_discarded()) continue;
      version = j["torch"].get<std::string>();
      const double tr = j["train_ms"].get<double>(), ev = j["eval_ms"].get<double>();
      if (torch_train < 0 || tr < torch_train) torch_train = tr, torch_train_threads = threads;
      if (torch_eval < 0 || ev < torch_eval) torch_eval = ev, torch_eval_threads = threads;
    }
  const double tokens = static_cast<double>(s.bptt * s.batch);
  std::printf("%-12s %12s %8s %12s %8s %12s %8s\n", "pass", "rnnkit ms", "threads", "PyTorch ms", "threads",
              "rnnkit/torch", "tok/s");
  const struct {
    const char* name;
    double mine, theirs;
    int mine_threads, their_threads;
  } rows[] = {{"train step", best.train_ms, torch_train, best_train_threads, torch_train_threads},
              {"eval", best.eval_ms, torch_eval, best_eval_threads, torch_eval_threads}};
  for (const auto& r : rows) {
    char theirs[32] = "-", their_threads[32] = "-", ratio[32] = "-";
    if (r.theirs > 0) {
      std::snprintf(theirs, sizeof(theirs), "%.2f", r.theirs);
      std::snprintf(their_threads, sizeof(their_threads), "%d", r.their_threads);
      std::snprintf(ratio, sizeof(ratio), "%.3f", r.mine / r.theirs);
    }
    std::printf("%-12s %12.2f %8d %12s %8s %12s %8.0f\n", r.name, r.mine, r.mine_threads, theirs, their_threads,
                ratio, tokens / (r.mine * 1e-3));
  }
  std::printf("medians of %lld batches after 2 warm-ups; PyTorch %s\n", static_cast<long long>(s.reps),
              version.c_str());
  return 0;
}
