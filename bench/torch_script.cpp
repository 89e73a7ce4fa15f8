#include "torch_script.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace rnnkit::bench {

nlohmann::json run_torch_script(const std::string& script, const nlohmann::json& cfg, int threads,
                                const char* who) {
  const std::string n = std::to_string(threads);
  const std::string cmd = "env -u OPENBLAS_CORETYPE OMP_NUM_THREADS=" + n + " OPENBLAS_NUM_THREADS=" + n +
                          " /usr/bin/python3 '" + script + "' '" + cfg.dump() + "'";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return nullptr;
  std::string output;
  char buf[4096];
  while (size_t got = fread(buf, 1, sizeof(buf), pipe)) output.append(buf, got);
  if (pclose(pipe) != 0) {
    std::cerr << who << ": the PyTorch script failed (" << cmd << ")\n";
    return nullptr;
  }
  return nlohmann::json::parse(output, nullptr, false);
}

std::string bench_script_path(const std::string& name) {
  const std::string here = __FILE__;
  return here.substr(0, here.find_last_of('/') + 1) + "py/" + name;
}

std::string option_value(int argc, char** argv, int& i, const char* tool) {
  if (i + 1 >= argc) {
    std::cerr << tool << ": " << argv[i] << " needs a value\n";
    std::exit(2);
  }
  ++i;
  return argv[i];
}

int64_t positive_option(int argc, char** argv, int& i, const char* tool) {
  const char* option = argv[i];
  const std::string v = option_value(argc, argv, i, tool);
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x <= 0) {
    std::cerr << tool << ": " << option << " expects a positive integer, got '" << v << "'\n";
    std::exit(2);
  }
  return x;
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double median_ms(const std::function<void()>& fn, int64_t reps, int warmups) {
  for (int w = 0; w < warmups; ++w) fn();
  std::vector<double> times;
  for (int64_t i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return median_of(times);
}

}  // namespace rnnkit::bench
