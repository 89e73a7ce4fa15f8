#!/usr/bin/env bash
# Usage: consumer_test.sh find_package|add_subdirectory SOURCE_DIR BUILD_DIR WORK_DIR
# Builds tests/cmake/consumer against rnnkit the way a downstream project would.
set -euo pipefail
mode=$1 src=$2 build=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
if [ "$mode" = find_package ]; then
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  cmake -S "$src/tests/cmake/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
else
  cmake -S "$src/tests/cmake/consumer" -B "$work/build" -G Ninja -DRNNKIT_SOURCE="$src" \
    -DRNNKIT_BUILD_TESTS=OFF -DRNNKIT_BUILD_BENCH=OFF -DRNNKIT_BUILD_APPS=OFF >/dev/null
fi
cmake --build "$work/build" -j "$(nproc)" >/dev/null
"$work/build/consumer"
