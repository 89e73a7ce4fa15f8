#!/usr/bin/env bash
# Builds a few tests with AddressSanitizer and UBSan (-DRNNKIT_SANITIZE=ON) in
# their own build folder and runs them:
#   - the file-format tests (tests/io): the corruption test feeds the loaders
#     thousands of damaged files, and a crash, an out-of-bounds read or
#     undefined behaviour there must fail CI;
#   - the recurrent-layer parity test: its stacked cases run the module's
#     threaded schedules (directions at once, the wavefront of time chunks) whose
#     workspaces are sized per call and shared between threads;
#   - the recurrent modules' test: among others, the packed weights a module
#     keeps between calls, repacked in place, shared by two threads, and the
#     weight gradients added into the backward engine's running sums;
#   - the gradient checks, whose engine tests write gradient sums in place
#     only where nothing else can see them;
#   - the convolution kernels' test (oneDNN primitives on reordered copies in
#     kept per-thread buffers).
#
#   scripts/asan_tests.sh                    # build-asan/, all of them
#   RNNKIT_ASAN_BUILD_DIR=/tmp/a scripts/asan_tests.sh
#   RNNKIT_ASAN_TESTS="test_corruption" scripts/asan_tests.sh
#
# Prints "asan: N passed, M failed" last and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR="${RNNKIT_ASAN_BUILD_DIR:-build-asan}"
JOBS="${RNNKIT_JOBS:-$(nproc)}"
read -r -a TESTS <<< "${RNNKIT_ASAN_TESTS:-test_corruption test_checkpoint test_safetensors test_rnn_parity test_rnn_modules test_gradcheck test_conv_kernels}"

# -O1 -g1: the speed ASan is designed for, line numbers in reports, and a
# quicker build than -O2 -g. Apps and benchmarks are not built.
cmake -S . -B "$BUILD_DIR" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DRNNKIT_SANITIZE=ON -DRNNKIT_BUILD_TESTS=ON -DRNNKIT_BUILD_BENCH=OFF -DRNNKIT_BUILD_APPS=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TESTS[@]}"

# halt_on_error / abort_on_error: the first report ends the test with a
# failure instead of a printed warning that a green run would hide.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"

passed=0
failed=0
for t in "${TESTS[@]}"; do
  echo "== $t (AddressSanitizer + UBSan)"
  if "$BUILD_DIR/tests/$t" --gtest_brief=1; then
    passed=$((passed + 1))
  else
    echo "asan: $t FAILED"
    failed=$((failed + 1))
  fi
done
echo "asan: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
