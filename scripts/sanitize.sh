#!/usr/bin/env bash
# Builds everything with AddressSanitizer + UndefinedBehaviorSanitizer (SIEVE_SANITIZE, CPU
# only) into build-asan and runs the whole CPU test suite there (ctest -LE gpu); any report
# fails its test. It takes too long for CI on 2 cores (README, "Tests"), so run it before every
# resolve. Extra arguments go to ctest (e.g. -R scheduler); JOBS sets the build's parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIEVE_CUDA=OFF \
  -DSIEVE_SANITIZE="address;undefined" >/dev/null
cmake --build build-asan -j"${JOBS:-$(nproc)}"
# UBSan stops at its first report (the build does not pass -fno-sanitize-recover); ASan's leak
# checker runs at every test binary's exit.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1
cd build-asan
ctest -LE gpu --output-on-failure -j"${JOBS:-$(nproc)}" --timeout 3600 "$@"
