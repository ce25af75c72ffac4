#!/usr/bin/env bash
# Prefill and decode tokens/s of the CPU backend on a SmolLM2-135M-shaped model with random
# weights (bench/configs/smollm2-135m.json), through `sieve generate --json`. Appends a dated
# section with the exact commands and the machine to bench/results/cpu_generate.md.
#   bench/cpu_generate.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
out=bench/results/cpu_generate.md
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
prompt() { python3 -c "import random; random.seed($1); print(','.join(str(random.randrange(1, 49152)) for _ in range($1)))"; }
{
  echo
  echo "## $(date -u +%Y-%m-%d) — $cpu, $threads threads"
  echo
  echo "| prompt tokens | generated | prefill tokens/s | decode tokens/s |"
  echo "| --- | --- | --- | --- |"
} >> "$out"
for len in 16 128 512; do
  cmd="OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads build/sieve --log-level warn generate --model bench/configs/smollm2-135m.json --load-format dummy --prompt-token-ids <$len random ids> --max-tokens 64 --ignore-eos --json"
  json=$(OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads build/sieve --log-level warn generate \
    --model bench/configs/smollm2-135m.json --load-format dummy --prompt-token-ids "$(prompt $len)" \
    --max-tokens 64 --ignore-eos --json | tail -1)
  python3 - "$json" "$len" >> "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"| {sys.argv[2]} | {r['completion_tokens']} | {r['prefill_tokens_per_s']:.0f} | {r['decode_tokens_per_s']:.1f} |")
PY
done
echo >> "$out"
echo "Command (per row): \`$cmd\`" >> "$out"
tail -8 "$out"
