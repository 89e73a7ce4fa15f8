#pragma once
// PyTorch side of the benchmark: bench/py/torch_bench.py (built into the binary)
// run by a Python interpreter in a subprocess, whose environment is set per BLAS
// thread count: OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = k, OPENBLAS_CORETYPE
// and OPENBLAS_L2_SIZE removed, so that torch is at its best on this machine.
#include <cstdint>
#include <string>
#include <vector>

#include "rnn_bench.h"

namespace rnnkit::bench {

struct TorchTiming {
  double fwd_ms = -1, train_ms = -1;   // best over the thread settings tried
  std::string fwd_setting, train_setting;  // e.g. "torch 2 / BLAS 1"
  int fwd_reps = 0, train_reps = 0;
  int64_t peak_train_bytes = -1;
};

struct TorchResult {
  bool ok = false;
  std::string error;    // why not, when !ok
  std::string version;  // torch.__version__
  std::string blas;     // the BLAS library torch loaded
  std::vector<TorchTiming> rows;  // one per requested row
};

struct TorchOptions {
  std::string python = "/usr/bin/python3";
  std::vector<int> torch_threads = {1, 2};  // torch.set_num_threads values
  std::vector<int> blas_threads = {1, 2};   // OPENBLAS_NUM_THREADS = OMP_NUM_THREADS values
  int reps = 10;
  double budget_s = 2.0;  // per row, thread setting and measurement
  bool memory = true;     // also measure the peak memory of a training step
  bool verbose = false;   // pass the script's progress lines through
};

// Runs every setting and keeps the best time per row and measurement. When the
// loaded BLAS is not OpenBLAS, OPENBLAS_NUM_THREADS has no effect and only the
// first BLAS setting runs.
TorchResult run_torch(const std::vector<SuiteRow>& rows, const TorchOptions& opt);

}  // namespace rnnkit::bench
