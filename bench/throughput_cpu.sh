#!/usr/bin/env bash
# Issue 5's measurement: output tokens/s of `sieve bench throughput` on the default model with
# 128-token prompts and 128 output tokens, at 1, 16 and 64 concurrent sequences, with the step
# split. Appends a dated section to bench/results/throughput_cpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/results/throughput_cpu.md
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
[[ -f $out ]] || echo "# Offline throughput on the CPU backend (bench/throughput_cpu.sh)" > "$out"
{
  echo
  echo "## $(date -u +%Y-%m-%d) — $cpu, $(nproc) threads, load average $(cut -d' ' -f1 /proc/loadavg) at start"
  echo
  echo "| concurrent seqs | prompts | output tokens/s | total tokens/s | elapsed s | peak KV pages | model s | attention s | scheduler s | sampling s | detokenize s |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
} >> "$out"
for seqs in 1 16 64; do
  prompts=$(( seqs == 1 ? 4 : seqs * 2 ))
  cmd="build/sieve --log-level warn bench throughput --model default --num-prompts $prompts --input-len 128 --output-len 128 --max-num-seqs $seqs --max-num-batched-tokens 2048 --json"
  json=$($cmd | tail -1)
  python3 - "$json" "$seqs" "$prompts" >> "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); s = r["step_split_s"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {r['output_tokens_per_s']:.1f} | {r['total_tokens_per_s']:.1f} | "
      f"{r['elapsed_s']:.1f} | {r['peak_kv_pages']} | {s['model_without_attention']:.2f} | {s['attention']:.2f} | "
      f"{s['scheduler']:.3f} | {s['sampling']:.3f} | {s['detokenization']:.3f} |")
PY
  echo "Command: \`$cmd\`" >> "$out.cmds"
done
cat "$out.cmds" >> "$out" && rm "$out.cmds"
tail -12 "$out"
