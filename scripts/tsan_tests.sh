#!/usr/bin/env bash
# Builds the per-step scheduler's test (tests/test_step_scheduler.cpp: the
# scheduler is header-only, its threads plain std::threads) with
# ThreadSanitizer and runs it, so that a data race in the scheduler's
# hand-over of groups and parts between threads fails CI. Only this test: the
# kernels run in OpenMP regions, whose runtime is not built for ThreadSanitizer
# and would report its own synchronisation as races.
#
#   scripts/tsan_tests.sh                     # builds in build-tsan/
#   RNNKIT_TSAN_BUILD_DIR=/tmp/t scripts/tsan_tests.sh
#
# Exits non-zero on a report or a failed test.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR="${RNNKIT_TSAN_BUILD_DIR:-build-tsan}"
mkdir -p "$BUILD_DIR"
"${CXX:-g++}" -std=c++17 -O1 -g1 -fsanitize=thread -Isrc -Iinclude tests/test_step_scheduler.cpp \
  -lgtest -lgtest_main -pthread -o "$BUILD_DIR/test_step_scheduler"
echo "== test_step_scheduler (ThreadSanitizer)"
TSAN_OPTIONS="halt_on_error=1:${TSAN_OPTIONS:-}" "$BUILD_DIR/test_step_scheduler" --gtest_brief=1
