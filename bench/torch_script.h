#pragma once
// What the module benchmarks (bench_rnn_layers, bench_lm, bench_tensor_ops)
// share: the PyTorch side, a script under bench/py run by /usr/bin/python3 in
// a subprocess, and the timing of rnnkit's side.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace rnnkit::bench {

// Runs `script` with cfg (JSON) as its one argument, torch and its BLAS on
// `threads` threads (OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = threads, set
// before torch loads; OPENBLAS_CORETYPE removed), and returns what it printed,
// parsed as JSON; null, with a line on stderr that starts with `who`, when the
// script fails (a discarded value when it printed no JSON).
nlohmann::json run_torch_script(const std::string& script, const nlohmann::json& cfg, int threads,
                                const char* who);

// The path of bench/py/<name> in this source tree.
std::string bench_script_path(const std::string& name);

// Command-line values: argv[i + 1], i advanced past it. A missing value, or
// one that is not a positive integer, prints one line naming `tool` and the
// option to stderr and exits with status 2.
std::string option_value(int argc, char** argv, int& i, const char* tool);
int64_t positive_option(int argc, char** argv, int& i, const char* tool);

// The median of v (the mean of the middle two for an even count).
double median_of(std::vector<double> v);

// The median time in ms of reps calls of fn after `warmups` untimed ones.
double median_ms(const std::function<void()>& fn, int64_t reps, int warmups = 1);

}  // namespace rnnkit::bench
