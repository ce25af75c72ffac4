#!/usr/bin/env bash
# Sets everything up, builds with warnings as errors, runs every CPU test, then builds the fuzz
# targets and runs each briefly (scripts/fuzz.sh). (The GPU tests are one binary labelled `gpu`,
# run on the GPU machine; the sanitizer build of the suite is scripts/sanitize.sh, run before
# every resolve: too slow for CI.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh -DSIEVE_WERROR=ON "$@"
cd build
ctest -LE gpu --output-on-failure -j"$(nproc)" --timeout 1200
cd ..
scripts/fuzz.sh
