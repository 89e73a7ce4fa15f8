#!/usr/bin/env bash
# The main job on its embedded default: sets up and builds (scripts/setup.sh),
# then trains the hand-written i2h/i2o recurrent network end to end and prints
# its loss falling. Extra arguments are passed to the program.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${RNNKIT_BUILD_DIR:-build}"
exec "$BUILD_DIR/train_tiny" "$@"
