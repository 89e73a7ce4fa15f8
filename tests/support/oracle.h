#pragma once
// Live PyTorch oracle for parity tests. One persistent /usr/bin/python3
// process per test binary runs tests/parity/oracle.py; each call sends a case
// name, a JSON config and named tensors, and receives named tensors back.
// Messages are safetensors blobs framed by an 8-byte length, so the C++ side
// reuses rnnkit::io and the Python side needs only torch and numpy.
//
// Adding a parity case: write a function in tests/parity/cases_<area>.py
// decorated with @case("name"), then call oracle().call("name", cfg, inputs).
#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "rnnkit/io/safetensors.h"
#include "rnnkit/rnnkit.h"

namespace rnnkit::testing {

class Oracle {
 public:
  Oracle();
  ~Oracle();
  Oracle(const Oracle&) = delete;
  Oracle& operator=(const Oracle&) = delete;
  // Throws rnnkit::Error with the Python traceback when the case fails.
  StateDict call(const std::string& case_name, const nlohmann::json& config, const StateDict& inputs);

 private:
  int to_child_ = -1, from_child_ = -1;
  int pid_ = -1;
};

// The process-wide oracle (started on first use).
Oracle& oracle();

// A fresh seed per run (std::random_device), or RNNKIT_TEST_SEED if set, so a
// failure printed with its seed can be replayed.
uint64_t fresh_seed();

// max|got - want| / max(max|want|, 1): one relative figure per tensor.
double rel_error(const Tensor& got, const Tensor& want);
// Shape equality and rel_error <= tol, with a message naming `what`.
::testing::AssertionResult close_to(const Tensor& got, const Tensor& want, double tol, const std::string& what);

// Tracks the worst relative error seen under a label and prints it at exit,
// so a run documents the parity figures it achieved.
void record_error(const std::string& label, double err);

}  // namespace rnnkit::testing

#define EXPECT_CLOSE(got, want, tol, what) EXPECT_TRUE(::rnnkit::testing::close_to((got), (want), (tol), (what)))
