// nn::LSTM / nn::GRU / nn::RNN through the module API (what a user calls: shape
// checks, the autograd node, the fused kernels) next to torch.nn's in the same
// run: forward inference (no graph) and forward + backward (dL/dx and every
// parameter gradient), medians in ms, and the ratio rnnkit / PyTorch (< 1 is
// faster). PyTorch runs in /usr/bin/python3 (bench/py/bench_rnn_layers.py) with
// OPENBLAS_CORETYPE unset, once with 1 and once with 2 threads; rnnkit runs
// with 1 and 2 OpenMP threads; each side's better time of the two counts.
// Stacked and bidirectional layers also run with the module's thread schedule
// turned off (every layer and direction one after another on all threads):
// the `sequential` column, and `sched` = rnnkit / sequential, show what running
// directions concurrently and stacked layers as a wavefront gain.
// Inference runs in eval mode, as a deployed model does. A module keeps W_hh
// packed between inference calls while the weights do not change (and in eval
// mode W_ih where the forward takes it packed); the `repack ms` column is the
// forward with every W_hh and W_ih (and W_hr) marked changed before each call (as after
// an optimizer step), alternating call by call with the plain forward, and
// `kept` = plain / repack (the two timed alternately in a run of their own)
// shows what keeping them gains.
// The cells (LSTMCell, GRUCell, RNNCell) run as a decoder does: called step by
// step over `steps` inputs, the state carried on, the outputs stacked; forward
// + backward then gathers every parameter gradient over the steps. A cell
// keeps W_hh packed across the calls of a training loop too, so for the cells
// `repack ms` and `kept` are given for both passes (the weights marked changed
// before every step's call).
// With --bf16, a second table: the forward with set_bf16_inference(true) (W_hh
// rounded to bfloat16) and with set_bf16_products(true) (x, h, W_ih and W_hh
// rounded in the products) against the float32 forward, the three timed
// alternately on the forward's best thread count, and the largest difference
// of each one's outputs from float32's.
//
//   bench_rnn_layers [--hidden 512] [--input 512] [--batch 64] [--steps 25] [--layers 1]
//                    [--bidirectional] [--cells LSTM,GRU,RNN,LSTMCell,GRUCell,RNNCell] [--reps 10]
//                    [--script path/to/bench_rnn_layers.py] [--no-torch] [--bf16] [--proj P]
// --proj P gives the LSTM (the layer, not the cell) a projection of P outputs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <nlohmann/json.hpp>
#include <omp.h>
#include <string>
#include <vector>

#include "nn/rnn_function.h"
#include "rnnkit/autograd/node.h"
#include "rnnkit/nn/rnn.h"
#include "rnnkit/ops.h"
#include "rnnkit/threading.h"
#include "torch_script.h"

namespace {

using rnnkit::bench::median_ms;
using rnnkit::bench::median_of;
using rnnkit::bench::option_value;
using rnnkit::bench::positive_option;

constexpr const char* kTool = "bench_rnn_layers";

using namespace rnnkit;
namespace nn = rnnkit::nn;
using nlohmann::json;

struct Settings {
  int64_t input = 512, hidden = 512, batch = 64, steps = 25, layers = 1, reps = 10, proj = 0;
  bool bidirectional = false;
  std::vector<std::string> cells = {"LSTM", "GRU", "RNN"};
  std::string script;
  bool torch = true;
  bool bf16 = false;
};


struct Timing {
  double forward_ms = 0, train_ms = 0;
  int forward_threads = 0, train_threads = 0;
  double forward_sequential_ms = 0, train_sequential_ms = 0;  // 2 threads, schedule off
  double forward_kept_ms = 0, forward_repack_ms = 0;  // one interleaved run; repack: W_hh marked changed
  double train_kept_ms = 0, train_repack_ms = 0;      // the same for the cells' training loop
  double f32_ms = 0, bf16_ms = 0, bf16_error = 0;     // --bf16: one interleaved run, max |y_bf16 - y_f32|
  double products_ms = 0, products_error = 0;         // the same for set_bf16_products
};

// What one timed call runs: a layer over the whole sequence, or a cell called
// step by step. run(repack) returns the output [T, N, D*H]; with repack every
// W_hh and W_ih (and W_hr) is marked changed before each kernel call (a writable pointer
// taken).
struct Subject {
  std::shared_ptr<nn::Module> module;
  std::function<Tensor(bool repack)> run;
  bool cell = false;
  std::vector<Tensor> inputs;  // the leaves whose gradients a training call computes
  std::function<void(bool)> set_bf16_inference;
  std::function<void(bool)> set_bf16_products;
  bool proj = false;  // an LSTM with a projection (--proj)
};

void mark_weights_changed(const nn::Module& module) {
  for (const auto& [name, p] : module.named_parameters())
    if (name.rfind("weight_hh", 0) == 0 || name.rfind("weight_ih", 0) == 0 || name.rfind("weight_hr", 0) == 0)
      (void)p.data_ptr<float>();
}

template <class Layer>
Subject layer_subject(const Layer& layer, const Settings& s) {
  Subject sub;
  sub.module = layer.ptr();
  Tensor x = randn({s.steps, s.batch, s.input}).requires_grad_();
  sub.inputs = {x};
  sub.run = [layer, x](bool repack) {
    if (repack) mark_weights_changed(*layer);
    return layer->forward(x).output;
  };
  sub.set_bf16_inference = [layer](bool on) { layer->set_bf16_inference(on); };
  sub.set_bf16_products = [layer](bool on) { layer->set_bf16_products(on); };
  return sub;
}

// step(x_t, state) -> new state; out(state) -> h_t.
template <class Cell, class Step, class Out>
Subject cell_subject(const Cell& cell, const Settings& s, Step step, Out out) {
  Subject sub;
  sub.module = cell.ptr();
  sub.cell = true;
  for (int64_t t = 0; t < s.steps; ++t) sub.inputs.push_back(randn({s.batch, s.input}).requires_grad_());
  sub.run = [cell, xs = sub.inputs, step, out](bool repack) {
    std::vector<Tensor> ys;
    ys.reserve(xs.size());
    decltype(step(xs[0], {})) state{};
    for (const Tensor& x : xs) {
      if (repack) mark_weights_changed(*cell);
      state = step(x, state);
      ys.push_back(out(state));
    }
    return stack(ys);
  };
  sub.set_bf16_inference = [cell](bool on) { cell->set_bf16_inference(on); };
  sub.set_bf16_products = [cell](bool on) { cell->set_bf16_products(on); };
  return sub;
}

// Medians of fns called in turn, reps times each after a warm-up round, so
// that a change of load on the shared machine hits them alike.
std::vector<double> interleaved_ms(const std::vector<std::function<void()>>& fns, int64_t reps) {
  std::vector<std::vector<double>> times(fns.size());
  for (int64_t i = 0; i <= reps; ++i)
    for (size_t which = 0; which < fns.size(); ++which) {
      const auto t0 = std::chrono::steady_clock::now();
      fns[which]();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (i > 0) times[which].push_back(ms);
    }
  std::vector<double> medians;
  for (const auto& t : times) medians.push_back(median_of(t));
  return medians;
}
std::pair<double, double> interleaved_ms(const std::function<void()>& a, const std::function<void()>& b,
                                         int64_t reps) {
  const std::vector<double> m = interleaved_ms(std::vector<std::function<void()>>{a, b}, reps);
  return {m[0], m[1]};
}

// Best of 1 and 2 threads for each pass; then 2 threads with the module's
// thread schedule off.
Timing time_subject(const Subject& sub, const Settings& s) {
  const int64_t D = s.bidirectional ? 2 : 1;
  Tensor dy = randn({s.steps, s.batch, D * (sub.proj ? s.proj : s.hidden)});
  Timing best;
  const int max_threads = omp_get_max_threads();
  auto forward = [&](bool repack) {
    NoGradGuard guard;
    sub.module->eval();
    Tensor y = sub.run(repack);
    sub.module->train();
    return y;
  };
  auto train = [&](bool repack) {
    sub.module->zero_grad(true);
    for (Tensor x : sub.inputs) x.set_grad(Tensor());  // a handle on the same leaf
    sub.run(repack).backward(dy);
  };
  for (int threads = 1; threads <= std::min(2, max_threads); ++threads) {
    rnnkit::set_num_threads(threads);
    const double f = median_ms([&] { forward(false); }, s.reps);
    const double t = median_ms([&] { train(false); }, s.reps);
    if (best.forward_threads == 0 || f < best.forward_ms) {
      best.forward_ms = f;
      best.forward_threads = threads;
    }
    if (best.train_threads == 0 || t < best.train_ms) {
      best.train_ms = t;
      best.train_threads = threads;
    }
  }
  {
    // Kept against repacked, on each pass's best thread count, in one
    // interleaved run of their own.
    rnnkit::set_num_threads(best.forward_threads);
    const auto kept_repack = interleaved_ms([&] { forward(false); }, [&] { forward(true); }, s.reps);
    best.forward_kept_ms = kept_repack.first;
    best.forward_repack_ms = kept_repack.second;
    if (sub.cell) {
      rnnkit::set_num_threads(best.train_threads);
      const auto train_kept_repack = interleaved_ms([&] { train(false); }, [&] { train(true); }, s.reps);
      best.train_kept_ms = train_kept_repack.first;
      best.train_repack_ms = train_kept_repack.second;
    }
  }
  if (s.bf16) {
    rnnkit::set_num_threads(best.forward_threads);
    const Tensor y32 = forward(false);
    sub.set_bf16_inference(true);
    best.bf16_error = rnnkit::sub(forward(false), y32).abs().max().item();
    sub.set_bf16_inference(false);
    sub.set_bf16_products(true);
    best.products_error = rnnkit::sub(forward(false), y32).abs().max().item();
    sub.set_bf16_products(false);
    // Each mode switched on for its call only.
    const auto in_mode = [&](int mode) {
      return [&, mode] {
        sub.set_bf16_inference(mode == 1);
        sub.set_bf16_products(mode == 2);
        forward(false);
      };
    };
    const std::vector<double> ms = interleaved_ms({in_mode(0), in_mode(1), in_mode(2)}, s.reps);
    sub.set_bf16_inference(false);
    sub.set_bf16_products(false);
    best.f32_ms = ms[0];
    best.bf16_ms = ms[1];
    best.products_ms = ms[2];
  }
  if (max_threads >= 2 && (s.layers > 1 || s.bidirectional)) {
    // The two schedules alternate call by call, so that a change of load on the
    // shared machine hits both alike; the scheduled time replaces the one above
    // when that took 2 threads, so that the ratio compares one interleaved run.
    rnnkit::set_num_threads(2);
    for (int pass = 0; pass < 2; ++pass) {
      auto with = [&](nn::detail::LayerSchedule schedule) {
        return [&, pass, schedule] {
          nn::detail::set_layer_schedule(schedule);
          if (pass == 0)
            forward(false);
          else
            train(false);
        };
      };
      const auto sched_seq = interleaved_ms(with(nn::detail::LayerSchedule::kAuto),
                                            with(nn::detail::LayerSchedule::kSequential), s.reps);
      nn::detail::set_layer_schedule(nn::detail::LayerSchedule::kAuto);
      double& mine = pass == 0 ? best.forward_ms : best.train_ms;
      const int mine_threads = pass == 0 ? best.forward_threads : best.train_threads;
      (pass == 0 ? best.forward_sequential_ms : best.train_sequential_ms) = sched_seq.second;
      if (mine_threads == 2) mine = sched_seq.first;
    }
  }
  rnnkit::set_num_threads(0);
  return best;
}

// Runs the PyTorch script with `threads` threads; returns its JSON (null on failure).
json run_torch(const Settings& s, const std::vector<std::string>& cells, int threads) {
  const json cfg = {{"cells", cells},   {"input", s.input}, {"hidden", s.hidden},   {"batch", s.batch},
                    {"steps", s.steps}, {"reps", s.reps},   {"threads", threads},   {"layers", s.layers},
                    {"bidirectional", s.bidirectional}, {"proj", s.proj}};
  return rnnkit::bench::run_torch_script(s.script, cfg, threads, "bench_rnn_layers");
}

// The better of the PyTorch runs' times for cell and key ("forward_ms",
// "train_ms"), and its thread count; -1 when no run has it.
double best_torch_ms(std::initializer_list<const json*> runs, const std::string& cell, const char* key,
                     int* threads = nullptr) {
  double best = -1;
  for (const json* t : runs) {
    if (!t->is_object() || !t->contains("cells")) continue;
    const double v = (*t)["cells"][cell][key].get<double>();
    if (best < 0 || v < best) {
      best = v;
      if (threads != nullptr) *threads = (*t)["threads"].get<int>();
    }
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  s.script = rnnkit::bench::bench_script_path("bench_rnn_layers.py");
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--hidden") s.hidden = positive_option(argc, argv, i, kTool);
    else if (a == "--input") s.input = positive_option(argc, argv, i, kTool);
    else if (a == "--batch") s.batch = positive_option(argc, argv, i, kTool);
    else if (a == "--steps") s.steps = positive_option(argc, argv, i, kTool);
    else if (a == "--reps") s.reps = positive_option(argc, argv, i, kTool);
    else if (a == "--layers") s.layers = positive_option(argc, argv, i, kTool);
    else if (a == "--bidirectional") s.bidirectional = true;
    else if (a == "--cells") {
      s.cells.clear();
      std::string list = option_value(argc, argv, i, kTool);
      for (size_t at = 0; at <= list.size();) {
        const size_t comma = std::min(list.find(',', at), list.size());
        s.cells.push_back(list.substr(at, comma - at));
        at = comma + 1;
      }
    }
    else if (a == "--script") s.script = option_value(argc, argv, i, kTool);
    else if (a == "--no-torch") s.torch = false;
    else if (a == "--bf16") s.bf16 = true;
    else if (a == "--proj") s.proj = positive_option(argc, argv, i, kTool);
    else {
      std::cerr << "usage: bench_rnn_layers [--hidden H] [--input I] [--batch N] [--steps T] [--layers L] "
                   "[--bidirectional] [--cells LSTM,GRU,RNN,LSTMCell,GRUCell,RNNCell] [--reps R] [--script PATH] "
                   "[--no-torch] [--bf16] [--proj P]\n";
      return 2;
    }
  }
  const std::vector<std::string>& cells = s.cells;
  std::vector<Timing> ours;
  for (const std::string& cell : cells) {
    const bool is_cell = cell.size() > 4 && cell.compare(cell.size() - 4, 4, "Cell") == 0;
    if (is_cell && (s.layers != 1 || s.bidirectional)) {
      std::cerr << "bench_rnn_layers: " << cell << " is one layer, one direction (--layers 1, no --bidirectional)\n";
      return 2;
    }
    Subject sub;
    if (cell == "LSTM") {
      sub = layer_subject(nn::LSTM(nn::LSTMOptions(s.input, s.hidden)
                                       .num_layers(s.layers)
                                       .bidirectional(s.bidirectional)
                                       .proj_size(s.proj)),
                          s);
      sub.proj = s.proj > 0;
    }
    else if (cell == "GRU")
      sub = layer_subject(
          nn::GRU(nn::GRUOptions(s.input, s.hidden).num_layers(s.layers).bidirectional(s.bidirectional)), s);
    else if (cell == "RNN")
      sub = layer_subject(
          nn::RNN(nn::RNNOptions(s.input, s.hidden).num_layers(s.layers).bidirectional(s.bidirectional)), s);
    else if (cell == "LSTMCell") {
      nn::LSTMCell c(s.input, s.hidden);
      sub = cell_subject(
          c, s, [c](const Tensor& x, const nn::LSTMState& st) { return c->forward(x, st); },
          [](const nn::LSTMState& st) { return st.h; });
    } else if (cell == "GRUCell") {
      nn::GRUCell c(s.input, s.hidden);
      sub = cell_subject(
          c, s, [c](const Tensor& x, const Tensor& h) { return c->forward(x, h); }, [](const Tensor& h) { return h; });
    } else if (cell == "RNNCell") {
      nn::RNNCell c(s.input, s.hidden);
      sub = cell_subject(
          c, s, [c](const Tensor& x, const Tensor& h) { return c->forward(x, h); }, [](const Tensor& h) { return h; });
    } else {
      std::cerr << "bench_rnn_layers: unknown cell '" << cell
                << "' (LSTM, GRU, RNN, LSTMCell, GRUCell or RNNCell)\n";
      return 2;
    }
    ours.push_back(time_subject(sub, s));
  }

  json torch1, torch2;
  if (s.torch) {
    torch1 = run_torch(s, cells, 1);
    torch2 = run_torch(s, cells, 2);
  }
  std::printf(
      "recurrent layers, float32, input %lld, hidden %lld%s, batch %lld, steps %lld, layers %lld%s, median of %lld\n",
      static_cast<long long>(s.input), static_cast<long long>(s.hidden),
      s.proj > 0 ? (", LSTM proj_size " + std::to_string(s.proj)).c_str() : "", static_cast<long long>(s.batch),
      static_cast<long long>(s.steps), static_cast<long long>(s.layers), s.bidirectional ? ", bidirectional" : "",
      static_cast<long long>(s.reps));
  std::printf("%-8s %-16s %12s %8s %10s %6s %13s %7s %12s %8s %8s\n", "layer", "pass", "rnnkit ms", "threads",
              "repack ms", "kept", "sequential ms", "sched", "torch ms", "threads", "ratio");
  for (size_t i = 0; i < cells.size(); ++i) {
    for (int pass = 0; pass < 2; ++pass) {
      const char* key = pass == 0 ? "forward_ms" : "train_ms";
      const double mine = pass == 0 ? ours[i].forward_ms : ours[i].train_ms;
      const int mine_threads = pass == 0 ? ours[i].forward_threads : ours[i].train_threads;
      int threads = 0;
      const double best = best_torch_ms({&torch1, &torch2}, cells[i], key, &threads);
      const char* pass_name = pass == 0 ? "forward" : "forward+backward";
      const double sequential = pass == 0 ? ours[i].forward_sequential_ms : ours[i].train_sequential_ms;
      char seq_ms[32] = "-", sched[32] = "-", torch_ms[32] = "-", torch_threads[32] = "-", ratio[32] = "-";
      char repack_ms[32] = "-", kept[32] = "-";
      const double kept_ms = pass == 0 ? ours[i].forward_kept_ms : ours[i].train_kept_ms;
      const double repacked_ms = pass == 0 ? ours[i].forward_repack_ms : ours[i].train_repack_ms;
      if (repacked_ms > 0) {
        std::snprintf(repack_ms, sizeof(repack_ms), "%.2f", repacked_ms);
        std::snprintf(kept, sizeof(kept), "%.2f", kept_ms / repacked_ms);
      }
      if (sequential > 0) {
        std::snprintf(seq_ms, sizeof(seq_ms), "%.2f", sequential);
        std::snprintf(sched, sizeof(sched), "%.2f", mine / sequential);
      }
      if (best > 0) {
        std::snprintf(torch_ms, sizeof(torch_ms), "%.2f", best);
        std::snprintf(torch_threads, sizeof(torch_threads), "%d", threads);
        std::snprintf(ratio, sizeof(ratio), "%.2f", mine / best);
      }
      std::printf("%-8s %-16s %12.2f %8d %10s %6s %13s %7s %12s %8s %8s\n", cells[i].c_str(), pass_name, mine,
                  mine_threads, repack_ms, kept, seq_ms, sched, torch_ms, torch_threads, ratio);
    }
  }
  if (s.bf16) {
    std::printf("\nbfloat16 inference, forward in eval mode, the three alternating: bf16 = set_bf16_inference "
                "(W_hh rounded),\nbf16p = set_bf16_products (x, h, W_ih and W_hh rounded in the products)\n"
                "%-8s %11s %9s %9s %10s %12s %10s %9s %10s %12s\n",
                "layer", "float32 ms", "bf16 ms", "bf16/f32", "bf16/torch", "max|y-y_f32|", "bf16p ms", "bf16p/f32",
                "bf16p/torch", "max|y-y_f32|");
    for (size_t i = 0; i < cells.size(); ++i) {
      const double best = best_torch_ms({&torch1, &torch2}, cells[i], "forward_ms");
      char vs_torch[32] = "-", p_vs_torch[32] = "-";
      if (best > 0) {
        std::snprintf(vs_torch, sizeof(vs_torch), "%.2f", ours[i].bf16_ms / best);
        std::snprintf(p_vs_torch, sizeof(p_vs_torch), "%.2f", ours[i].products_ms / best);
      }
      std::printf("%-8s %11.3f %9.3f %9.2f %10s %12.2e %10.3f %9.2f %10s %12.2e\n", cells[i].c_str(),
                  ours[i].f32_ms, ours[i].bf16_ms, ours[i].bf16_ms / ours[i].f32_ms, vs_torch, ours[i].bf16_error,
                  ours[i].products_ms, ours[i].products_ms / ours[i].f32_ms, p_vs_torch, ours[i].products_error);
    }
  }
  std::printf("ratio = rnnkit / PyTorch, each the best of 1 and 2 threads; below 1 is faster\n");
  std::printf("forward in eval mode; repack = the forward (cells: and forward+backward) with W_hh, W_ih (and W_hr) "
              "marked changed\nbefore every call (packed afresh); kept = plain / repack, timed alternately in a run of "
              "their own\n");
  std::printf("cells: called step by step over the steps, the state carried on, the outputs stacked\n");
  std::printf("sequential = rnnkit on 2 threads with layers and directions one after another; "
              "sched = rnnkit / sequential\n");
  for (const json* t : {&torch1, &torch2}) {
    if (!t->is_object()) continue;
    std::string blas;
    for (const auto& b : (*t)["blas"]) blas += (blas.empty() ? "" : ", ") + b.get<std::string>();
    std::printf("PyTorch %s, %d thread(s), BLAS: %s\n", (*t)["torch"].get<std::string>().c_str(),
                (*t)["threads"].get<int>(), blas.empty() ? "none found" : blas.c_str());
  }
  return 0;
}
