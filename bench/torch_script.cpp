#include "torch_script.h"

#include <cstdio>
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

}  // namespace rnnkit::bench
