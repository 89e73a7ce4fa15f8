#!/usr/bin/env bash
# Sets up and builds (scripts/setup.sh), then runs the whole test suite,
# including the live PyTorch parity checks, and prints CTest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${RNNKIT_BUILD_DIR:-build}"
cd "$BUILD_DIR"
ctest --output-on-failure -j "${RNNKIT_TEST_JOBS:-2}" "$@"
