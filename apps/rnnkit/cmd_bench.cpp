// `rnnkit bench`: rnnkit's recurrent kernels against oneDNN's RNN primitive,
// PyTorch and the sgemm ceiling, in one run (bench/rnn_bench.h).
#include <iostream>

#include "commands.h"
#include "rnn_bench.h"

namespace {

const rnnkit::cli::Registration kBench({
    "bench",
    "time the recurrent kernels against oneDNN, PyTorch and the sgemm ceiling",
    [](const std::vector<std::string>& args) {
      return rnnkit::bench::run_cli(args, std::cout, std::cerr);
    },
});

}  // namespace
