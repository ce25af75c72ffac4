#!/usr/bin/env bash
# Second device call: the benchmarks again after the device-side sampling path, and Hugging Face
# transformers `generate` on the same shape as the peer. Logs go to $OUT.
set -uo pipefail
bundle=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
ids() { python3 -c "import random; random.seed($1); print(','.join(str(random.randrange(1000, 120000)) for _ in range($2)))"; }
cfg=$repo/bench/configs/llama-3.1-8b.json
cd "$bundle"
{
  timeout 120 ./run.sh sieve --log-level warn generate --device cuda --model "$cfg" --load-format dummy \
    --ignore-eos --json --max-num-batched-tokens 2048 --prompt-token-ids "$(ids 1 512)" --max-tokens 256 | tail -1
  for seqs in 1 64 256; do
    timeout 120 ./run.sh sieve --log-level warn bench throughput --device cuda --model "$cfg" \
      --load-format dummy --num-prompts $seqs --input-len 1024 --output-len 128 --max-num-seqs $seqs \
      --max-num-batched-tokens 8192 --kv-cache-gib 40 --json | tail -1
  done
} > "$out/sieve2.jsonl" 2> "$out/sieve2.err"
cat "$out/sieve2.jsonl"
cd "$repo"
timeout 300 python3 bench/gpu/hf_generate.py --cases 1x512x256,64x1024x128 > "$out/hf.jsonl" 2> "$out/hf.err"
cat "$out/hf.jsonl"; tail -3 "$out/hf.err"
