#pragma once
// The recurrent-layer benchmark shared by `rnnkit bench` and bench/bench_suite:
// on each row of a suite (cell, hidden size, batch, steps; input_size = hidden
// size, one layer, one direction, float32) it times, in one run,
//   - rnnkit's kernel layer (src/kernels/cpu/rnn.h), called directly,
//   - oneDNN's own RNN primitive (vanilla_rnn / lstm / lbr_gru through dnnl.hpp),
//   - PyTorch (torch.nn.RNN/LSTM/GRU in a /usr/bin/python3 subprocess, best of its
//     thread settings),
//   - the sgemm ceiling (a large dnnl_sgemm),
// each as forward inference and as forward training + backward (dL/dx and every
// parameter gradient), and prints medians, µs per step, GFLOP/s, % of the
// ceiling, the time ratios and the peak memory of a training step.
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace rnnkit::bench {

struct SuiteRow {
  std::string cell;  // lstm, gru, rnn_tanh, rnn_relu
  int64_t hidden = 0;
  int64_t batch = 0;
  int64_t steps = 0;
  // "lstm-128-1-256": cell-hidden-batch-steps
  std::string key() const;
  // FLOPs of the forward's GEMMs, 2*G*H*(I+H)*N*T; forward + backward is 3x that
  // (dgates x W for dx and dh, and the two weight-gradient products).
  double forward_flops() const;
};

// The suite of /work/shared/bench_suite.txt, built in.
std::vector<SuiteRow> default_suite();
// Lines "cell hidden batch steps"; '#' starts a comment. Throws on a bad line.
std::vector<SuiteRow> parse_suite(std::istream& in);

// Entry point of both front ends: parses args (as after the program or
// subcommand name), runs, prints to out. Returns the exit code; throws
// rnnkit::Error for bad arguments.
int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// The option summary printed by --help.
std::string usage();

}  // namespace rnnkit::bench
