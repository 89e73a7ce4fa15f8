#!/usr/bin/env bash
# Installs every Debian package rnnkit needs (idempotent), then configures and
# builds rnnkit in Release with tests and benchmarks into ./build.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libdnnl-dev libomp-dev
  # dnnl's CMake package config calls find_package(OpenCL) (its GPU runtime is
  # OpenCL), so configuring fails without it; apt only recommends it.
  ocl-icd-opencl-dev
  libgtest-dev googletest
  nlohmann-json3-dev
  python3 python3-torch python3-numpy python3-pip
  # PyTorch's BLAS: without it Debian's torch falls back to the reference BLAS,
  # and benchmarks would compare against PyTorch at its worst, not its best.
  libopenblas0-pthread
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The reference safetensors implementation (interop tests); Debian 12 has no package for it.
if ! /usr/bin/python3 -c 'import safetensors' 2>/dev/null; then
  echo "setup: installing the safetensors Python package (pip)"
  /usr/bin/python3 -m pip install --quiet --break-system-packages safetensors==0.8.0
fi

BUILD_DIR="${RNNKIT_BUILD_DIR:-build}"
JOBS="${RNNKIT_JOBS:-$(nproc)}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRNNKIT_BUILD_TESTS=ON -DRNNKIT_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
