#pragma once
// The PyTorch side of the module benchmarks (bench_rnn_layers, bench_lm): a
// script under bench/py run by /usr/bin/python3 in a subprocess.
#include <nlohmann/json.hpp>
#include <string>

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

}  // namespace rnnkit::bench
