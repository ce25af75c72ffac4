#!/usr/bin/env bash
# Default model on this machine: prefill and decode tokens/s of `sieve generate` against
# llama.cpp's llama-bench on the same GGUF with the same thread count. llama.cpp comes from the
# PyPI source of llama-cpp-python (which vendors it), built under $LLAMACPP_DIR (default
# /tmp/llamacpp); nothing of it is committed. Appends a dated section to
# bench/results/llamacpp_compare.md.
#   bench/llamacpp_compare.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
dir=${LLAMACPP_DIR:-/tmp/llamacpp}
model=${SIEVE_MODEL_CACHE:-$HOME/.cache/sieve}/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ ! -x $dir/build/bin/llama-bench ]]; then
  mkdir -p "$dir"
  .venv/bin/pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$dir"
  tar -xzf "$dir"/llama_cpp_python-*.tar.gz -C "$dir"
  src=$(ls -d "$dir"/llama_cpp_python-*/vendor/llama.cpp)
  cmake -S "$src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$dir/build" -j"$(nproc)" --target llama-bench >/dev/null
fi
out=bench/results/llamacpp_compare.md
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
[[ -f $out ]] || echo "# Default model: Sieve's CPU backend against llama.cpp (bench/llamacpp_compare.sh)" > "$out"
prompt=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(100, 49000)) for _ in range(128)))")
sieve_json=$(OMP_NUM_THREADS=$threads build/sieve --log-level warn generate --model "$model" \
  --prompt-token-ids "$prompt" --max-tokens 128 --ignore-eos --json | tail -1)
llama_json=$("$dir/build/bin/llama-bench" -m "$model" -t "$threads" -p 128 -n 128 -r 3 -o json)
python3 - "$sieve_json" "$llama_json" "$threads" "$cpu" "$(date -u +%Y-%m-%d)" "$(cut -d' ' -f1 /proc/loadavg)" >> "$out" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); runs = json.loads(sys.argv[2])
pp = next(r for r in runs if r["n_prompt"] > 0 and r["n_gen"] == 0)
tg = next(r for r in runs if r["n_gen"] > 0 and r["n_prompt"] == 0)
print(f"\n## {sys.argv[5]} — {sys.argv[4]}, {sys.argv[3]} threads, load average {sys.argv[6]} at start\n")
print("| engine | prefill 128 tokens/s | decode 128 tokens/s |")
print("| --- | --- | --- |")
print(f"| sieve (fp32 CPU backend, weights dequantized at load) | {s['prefill_tokens_per_s']:.0f} | {s['decode_tokens_per_s']:.1f} |")
print(f"| llama.cpp {pp.get('build_commit','')} (Q4_1 blocks) | {pp['avg_ts']:.0f} | {tg['avg_ts']:.1f} |")
print(f"| ratio sieve / llama.cpp | {s['prefill_tokens_per_s']/pp['avg_ts']:.2f} | {s['decode_tokens_per_s']/tg['avg_ts']:.2f} |")
PY
echo "Commands: \`build/sieve generate --model $model --prompt-token-ids <128 random ids> --max-tokens 128 --ignore-eos --json\` and \`llama-bench -m $model -t $threads -p 128 -n 128 -r 3\`" >> "$out"
tail -9 "$out"
