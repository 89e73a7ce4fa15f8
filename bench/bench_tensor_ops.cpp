// Float32 tensor ops whose elements each take a transcendental function, rnnkit
// against PyTorch in the same run: exp, tanh and sigmoid of a [rows, cols]
// tensor, softmax and log_softmax along its rows (a language model's output
// over its vocabulary; default 700 x 10000) and along dim 1 of [32, 50, 512]
// (columns 2 KiB apart). Forward only, no graph. Medians in ms and the ratio
// rnnkit / PyTorch (< 1 is faster); each side runs with 1 and with 2 threads
// and its better time counts. PyTorch runs in /usr/bin/python3
// (bench/py/bench_tensor_ops.py) with OPENBLAS_CORETYPE unset.
//
//   bench_tensor_ops [--rows 700] [--cols 10000] [--reps 15] [--script path/to/bench_tensor_ops.py] [--no-torch]
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "rnnkit/autograd/node.h"
#include "rnnkit/rnnkit.h"
#include "rnnkit/threading.h"
#include "torch_script.h"

namespace {

using namespace rnnkit;
using nlohmann::json;
using rnnkit::bench::median_ms;
using rnnkit::bench::option_value;
using rnnkit::bench::positive_option;

constexpr const char* kTool = "bench_tensor_ops";

struct Settings {
  int64_t rows = 700, cols = 10000, reps = 15;
  std::string script;
  bool torch = true;
};

struct Op {
  const char* name;
  const char* shape;  // printed
  std::function<Tensor(const Tensor& rows, const Tensor& slices)> fn;
};

const std::vector<Op>& ops() {
  static const std::vector<Op> list = {
      {"exp", "rows", [](const Tensor& r, const Tensor&) { return exp(r); }},
      {"tanh", "rows", [](const Tensor& r, const Tensor&) { return tanh(r); }},
      {"sigmoid", "rows", [](const Tensor& r, const Tensor&) { return sigmoid(r); }},
      {"softmax_rows", "rows, dim 1", [](const Tensor& r, const Tensor&) { return softmax(r, 1); }},
      {"log_softmax_rows", "rows, dim 1", [](const Tensor& r, const Tensor&) { return log_softmax(r, 1); }},
      {"softmax_dim1", "[32, 50, 512], dim 1", [](const Tensor&, const Tensor& s) { return softmax(s, 1); }},
      {"log_softmax_dim1", "[32, 50, 512], dim 1", [](const Tensor&, const Tensor& s) { return log_softmax(s, 1); }},
  };
  return list;
}

// Median ms per op with `threads` threads; each result is kept until the next
// call's is made (as on the PyTorch side).
std::vector<double> run_rnnkit(const Settings& s, int threads) {
  set_num_threads(threads);
  Generator gen(1);
  const Tensor rows = randn({s.rows, s.cols}, kFloat32, &gen);
  const Tensor slices = randn({32, 50, 512}, kFloat32, &gen);
  NoGradGuard no_grad;
  std::vector<double> ms;
  for (const Op& op : ops()) {
    Tensor held;
    ms.push_back(median_ms([&] { held = op.fn(rows, slices); }, s.reps, 2));
  }
  set_num_threads(0);
  return ms;
}

json run_torch(const Settings& s, int threads) {
  json names = json::array();
  for (const Op& op : ops()) names.push_back(op.name);
  const json cfg = {{"rows", s.rows}, {"cols", s.cols}, {"reps", s.reps}, {"threads", threads}, {"ops", names}};
  return rnnkit::bench::run_torch_script(s.script, cfg, threads, "bench_tensor_ops");
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  s.script = rnnkit::bench::bench_script_path("bench_tensor_ops.py");
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rows") s.rows = positive_option(argc, argv, i, kTool);
    else if (a == "--cols") s.cols = positive_option(argc, argv, i, kTool);
    else if (a == "--reps") s.reps = positive_option(argc, argv, i, kTool);
    else if (a == "--script") s.script = option_value(argc, argv, i, kTool);
    else if (a == "--no-torch") s.torch = false;
    else {
      std::cerr << "usage: bench_tensor_ops [--rows N] [--cols N] [--reps R] [--script PATH] [--no-torch]\n";
      return 2;
    }
  }
  const size_t n = ops().size();
  std::vector<double> mine(n, -1), theirs(n, -1);
  std::vector<int> mine_threads(n, 0), their_threads(n, 0);
  std::string torch_version = "not run";
  for (int threads : {1, 2}) {
    const std::vector<double> t = run_rnnkit(s, threads);
    for (size_t i = 0; i < n; ++i)
      if (mine[i] < 0 || t[i] < mine[i]) mine[i] = t[i], mine_threads[i] = threads;
    if (!s.torch) continue;
    const json j = run_torch(s, threads);
    if (j.is_null() || j.is_discarded()) continue;
    torch_version = j.value("torch", "?");
    for (size_t i = 0; i < n; ++i) {
      const double v = j["ms"].value(ops()[i].name, -1.0);
      if (v > 0 && (theirs[i] < 0 || v < theirs[i])) theirs[i] = v, their_threads[i] = threads;
    }
  }
  std::printf("float32 tensor ops, rows = [%lld, %lld], forward, no graph\n", static_cast<long long>(s.rows),
              static_cast<long long>(s.cols));
  std::printf("%-18s %-22s %10s %8s %11s %8s %12s\n", "op", "input", "rnnkit ms", "threads", "PyTorch ms", "threads",
              "rnnkit/torch");
  for (size_t i = 0; i < n; ++i) {
    char their_ms[32] = "-", their_t[32] = "-", ratio[32] = "-";
    if (theirs[i] > 0) {
      std::snprintf(their_ms, sizeof(their_ms), "%.2f", theirs[i]);
      std::snprintf(their_t, sizeof(their_t), "%d", their_threads[i]);
      std::snprintf(ratio, sizeof(ratio), "%.3f", mine[i] / theirs[i]);
    }
    std::printf("%-18s %-22s %10.2f %8d %11s %8s %12s\n", ops()[i].name, ops()[i].shape, mine[i], mine_threads[i],
                their_ms, their_t, ratio);
  }
  std::printf("medians of %lld calls after 2 warm-ups; PyTorch %s\n", static_cast<long long>(s.reps),
              torch_version.c_str());
  return 0;
}
