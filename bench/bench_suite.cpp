// bench_suite: the same benchmark as `rnnkit bench` (see bench/rnn_bench.h), as a
// stand-alone program. Takes the same options.
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "rnn_bench.h"

int main(int argc, char** argv) {
  try {
    return rnnkit::bench::run_cli(std::vector<std::string>(argv + 1, argv + argc), std::cout,
                                  std::cerr);
  } catch (const std::exception& e) {
    std::cerr << "bench_suite: error: " << e.what() << "\n";
    return 2;
  }
}
