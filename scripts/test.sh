#!/usr/bin/env bash
# The whole test suite: sets up and builds (scripts/setup.sh), runs the
# file-format, recurrent, gradient and convolution tests under AddressSanitizer
# (scripts/asan_tests.sh) and the per-step scheduler's test under
# ThreadSanitizer (scripts/tsan_tests.sh), then
# every CTest test — unit, gradient, live PyTorch parity, end-to-end — and
# prints CTest's summary last. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ "${RNNKIT_SKIP_ASAN:-0}" != 1 ]; then
  scripts/asan_tests.sh
  scripts/tsan_tests.sh
fi
BUILD_DIR="${RNNKIT_BUILD_DIR:-build}"
cd "$BUILD_DIR"
ctest --output-on-failure -j "${RNNKIT_TEST_JOBS:-2}" "$@"
