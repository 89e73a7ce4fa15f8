// nn::LSTM / nn::GRU / nn::RNN through the module API (what a user calls: shape
// checks, the autograd node, the fused kernels) next to torch.nn's in the same
// run: forward inference (no graph) and forward + backward (dL/dx and every
// parameter gradient), medians in ms, and the ratio rnnkit / PyTorch (< 1 is
// faster). PyTorch runs in /usr/bin/python3 (bench/py/bench_rnn_layers.py) with
// OPENBLAS_CORETYPE unset, once with 1 and once with 2 threads; rnnkit runs
// with 1 and 2 OpenMP threads; each side's better time of the two counts.
//
//   bench_rnn_layers [--hidden 512] [--input 512] [--batch 64] [--steps 25] [--reps 10]
//                    [--script path/to/bench_rnn_layers.py] [--no-torch]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <omp.h>
#include <string>
#include <vector>

#include "rnnkit/nn/rnn.h"
#include "rnnkit/autograd/node.h"
#include "rnnkit/ops.h"

namespace {

using namespace rnnkit;
namespace nn = rnnkit::nn;
using nlohmann::json;

struct Settings {
  int64_t input = 512, hidden = 512, batch = 64, steps = 25, reps = 10;
  std::string script;
  bool torch = true;
};

double median_ms(const std::function<void()>& fn, int64_t reps) {
  fn();  // warm-up
  std::vector<double> times;
  for (int64_t i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const size_t n = times.size();
  return n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
}

struct Timing {
  double forward_ms = 0, train_ms = 0;
  int forward_threads = 0, train_threads = 0;
};

// Best of 1 and 2 OpenMP threads for each pass.
template <class Layer>
Timing time_layer(const Layer& layer, const Settings& s) {
  Tensor x = randn({s.steps, s.batch, s.input}).requires_grad_();
  Tensor dy = randn({s.steps, s.batch, s.hidden});
  Timing best;
  const int max_threads = omp_get_max_threads();
  for (int threads = 1; threads <= std::min(2, max_threads); ++threads) {
    omp_set_num_threads(threads);
    const double forward = median_ms(
        [&] {
          NoGradGuard guard;
          layer->forward(x);
        },
        s.reps);
    const double train = median_ms(
        [&] {
          layer->zero_grad(true);
          x.set_grad(Tensor());
          layer->forward(x).output.backward(dy);
        },
        s.reps);
    if (best.forward_threads == 0 || forward < best.forward_ms) {
      best.forward_ms = forward;
      best.forward_threads = threads;
    }
    if (best.train_threads == 0 || train < best.train_ms) {
      best.train_ms = train;
      best.train_threads = threads;
    }
  }
  omp_set_num_threads(max_threads);
  return best;
}

// Runs the PyTorch script with `threads` threads; returns its JSON (null on failure).
json run_torch(const Settings& s, const std::vector<std::string>& cells, int threads) {
  const json cfg = {{"cells", cells},   {"input", s.input}, {"hidden", s.hidden}, {"batch", s.batch},
                    {"steps", s.steps}, {"reps", s.reps},   {"threads", threads}};
  const std::string n = std::to_string(threads);
  const std::string cmd = "env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=" + n + " OPENBLAS_NUM_THREADS=" + n +
                          " /usr/bin/python3 '" + s.script + "' '" + cfg.dump() + "'";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return nullptr;
  std::string output;
  char buf[4096];
  while (size_t got = fread(buf, 1, sizeof(buf), pipe)) output.append(buf, got);
  if (pclose(pipe) != 0) {
    std::cerr << "bench_rnn_layers: the PyTorch script failed (" << cmd << ")\n";
    return nullptr;
  }
  return json::parse(output, nullptr, false);
}

std::string default_script() {
  const std::string here = __FILE__;
  return here.substr(0, here.find_last_of('/') + 1) + "py/bench_rnn_layers.py";
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  s.script = default_script();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "bench_rnn_layers: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--hidden") s.hidden = std::stoll(value());
    else if (a == "--input") s.input = std::stoll(value());
    else if (a == "--batch") s.batch = std::stoll(value());
    else if (a == "--steps") s.steps = std::stoll(value());
    else if (a == "--reps") s.reps = std::stoll(value());
    else if (a == "--script") s.script = value();
    else if (a == "--no-torch") s.torch = false;
    else {
      std::cerr << "usage: bench_rnn_layers [--hidden H] [--input I] [--batch N] [--steps T] [--reps R] "
                   "[--script PATH] [--no-torch]\n";
      return 2;
    }
  }
  const std::vector<std::string> cells = {"LSTM", "GRU", "RNN"};
  std::vector<Timing> ours;
  ours.push_back(time_layer(nn::LSTM(s.input, s.hidden), s));
  ours.push_back(time_layer(nn::GRU(s.input, s.hidden), s));
  ours.push_back(time_layer(nn::RNN(s.input, s.hidden), s));

  json torch1, torch2;
  if (s.torch) {
    torch1 = run_torch(s, cells, 1);
    torch2 = run_torch(s, cells, 2);
  }
  std::printf("recurrent layers, float32, input %lld, hidden %lld, batch %lld, steps %lld, median of %lld\n",
              static_cast<long long>(s.input), static_cast<long long>(s.hidden), static_cast<long long>(s.batch),
              static_cast<long long>(s.steps), static_cast<long long>(s.reps));
  std::printf("%-5s %-16s %12s %8s %12s %8s %8s\n", "layer", "pass", "rnnkit ms", "threads", "torch ms", "threads",
              "ratio");
  for (size_t i = 0; i < cells.size(); ++i) {
    for (int pass = 0; pass < 2; ++pass) {
      const char* key = pass == 0 ? "forward_ms" : "train_ms";
      const double mine = pass == 0 ? ours[i].forward_ms : ours[i].train_ms;
      const int mine_threads = pass == 0 ? ours[i].forward_threads : ours[i].train_threads;
      double best = -1;
      int threads = 0;
      for (const json* t : {&torch1, &torch2}) {
        if (!t->is_object() || !t->contains("cells")) continue;
        const double v = (*t)["cells"][cells[i]][key].get<double>();
        if (best < 0 || v < best) {
          best = v;
          threads = (*t)["threads"].get<int>();
        }
      }
      const char* pass_name = pass == 0 ? "forward" : "forward+backward";
      if (best > 0)
        std::printf("%-5s %-16s %12.2f %8d %12.2f %8d %8.2f\n", cells[i].c_str(), pass_name, mine, mine_threads, best,
                    threads, mine / best);
      else
        std::printf("%-5s %-16s %12.2f %8d %12s %8s %8s\n", cells[i].c_str(), pass_name, mine, mine_threads, "-", "-",
                    "-");
    }
  }
  std::printf("ratio = rnnkit / PyTorch, each the best of 1 and 2 threads; below 1 is faster\n");
  for (const json* t : {&torch1, &torch2}) {
    if (!t->is_object()) continue;
    std::string blas;
    for (const auto& b : (*t)["blas"]) blas += (blas.empty() ? "" : ", ") + b.get<std::string>();
    std::printf("PyTorch %s, %d thread(s), BLAS: %s\n", (*t)["torch"].get<std::string>().c_str(),
                (*t)["threads"].get<int>(), blas.empty() ? "none found" : blas.c_str());
  }
  return 0;
}
