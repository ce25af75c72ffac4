#!/usr/bin/env bash
# Configures and builds Sieve into build/ (the binary is build/sieve). Extra arguments go to
# CMake's configure step, e.g. -DSIEVE_CUDA=OFF or -DSIEVE_WERROR=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)"
