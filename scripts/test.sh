#!/usr/bin/env bash
# Sets everything up, builds with warnings as errors, and runs every CPU test. (The GPU tests are
# one binary labelled `gpu`, run on the GPU machine.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh -DSIEVE_WERROR=ON "$@"
cd build
ctest -LE gpu --output-on-failure -j"$(nproc)" --timeout 1200
