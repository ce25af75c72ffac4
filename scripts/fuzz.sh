#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UndefinedBehaviorSanitizer) into
# build-fuzz and runs each for SIEVE_FUZZ_SECONDS (default 10) from its checked-in corpus, as
# ctests labelled `fuzz`: any crash, sanitizer report, leak or timeout fails. scripts/test.sh
# (CI) runs this; see fuzz/README.md for long runs.
set -euo pipefail
cd "$(dirname "$0")/.."
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSIEVE_FUZZ=ON -DSIEVE_BUILD_TESTS=OFF -DSIEVE_CUDA=OFF \
  -DSIEVE_FUZZ_SECONDS="${SIEVE_FUZZ_SECONDS:-10}" >/dev/null
cmake --build build-fuzz -j"${JOBS:-$(nproc)}" --target fuzzers
# One fuzzer at a time: each uses one core, and the machine's other core keeps its timing honest.
ctest --test-dir build-fuzz -L fuzz --output-on-failure
