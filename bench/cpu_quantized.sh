#!/usr/bin/env bash
# Issue 17's measurement: the CPU backend with GGUF weights kept quantized (B) against a build
# that dequantizes them at load (A), on the default model:
#   sieve bench throughput --model default --num-prompts {1,64} --input-len 128 --output-len 64
# A and B alternate (A B A B ...) so that load on a shared machine hits both alike; medians of
# whole-process wall time, user CPU time and output tokens/s. Beside them, the decode floor:
# bytes of weights read per token over the memory bandwidth (BANDWIDTH_GBS, measured separately).
#
# Usage: bench/cpu_quantized.sh BEFORE_BINARY AFTER_BINARY [ROUNDS_1] [ROUNDS_64]
# Appends a dated section to bench/results/cpu_quantized.md.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?before binary}
after=${2:?after binary}
rounds_1=${3:-5}
rounds_64=${4:-3}
bandwidth=${BANDWIDTH_GBS:-24.2}
python=${SIEVE_PYTHON:-.venv/bin/python}
out=bench/results/cpu_quantized.md
model=${SIEVE_MODEL_CACHE:-$HOME/.cache/sieve}/models/SmolLM2-135M-Instruct.Q4_1.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run() {  # run <label> <binary> <prompts>
  local args=(--log-level warn bench throughput --model default --num-prompts "$3" --input-len 128
              --output-len 64 --json)
  /usr/bin/time -f "%e %U" -o "$tmp/time" "$2" "${args[@]}" > "$tmp/out" 2>/dev/null
  echo "$1 $3 $(cat "$tmp/time") $(tail -1 "$tmp/out")" >> "$tmp/runs"
}

for prompts in 1 64; do
  rounds=$(( prompts == 1 ? rounds_1 : rounds_64 ))
  for ((i = 0; i < rounds; ++i)); do
    run before "$before" "$prompts"
    run after "$after" "$prompts"
  done
done

[[ -f $out ]] || echo "# The CPU backend with quantized weights (bench/cpu_quantized.sh)" > "$out"
"$python" - "$tmp/runs" "$model" "$bandwidth" "$before" "$after" >> "$out" <<'PY'
import json, statistics, subprocess, sys, datetime, os
runs_path, model, bandwidth, before, after = sys.argv[1:6]
rows = {}
for line in open(runs_path):
    label, prompts, wall, user, js = line.split(" ", 4)
    r = json.loads(js)
    rows.setdefault((int(prompts), label), []).append(
        (float(wall), float(user), r["output_tokens_per_s"], r["decode_step"]["p50_ms"]))
# Weight bytes a decode step reads: every matrix once (the tied embedding as the LM head).
from gguf import GGUFReader
reader = GGUFReader(model)
weight_bytes = sum(int(t.n_bytes) for t in reader.tensors if t.name.endswith(".weight")
                   and "norm" not in t.name)
floor_ms = weight_bytes / (float(bandwidth) * 1e9) * 1e3
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
cpu = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
load = open("/proc/loadavg").read().split()[0]
print(f"\n## {datetime.date.today()} — {cpu}, {os.cpu_count()} CPUs, load average {load} at the end\n")
print(f"A = `{before}` (weights dequantized to f32 at load), B = `{after}` (kept quantized). "
      f"Alternating A B A B, medians of n runs each.\n")
print("| prompts | build | n | wall s | user CPU s | output tokens/s | decode step p50 ms | floor ms/step (1 seq) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (prompts, label), v in sorted(rows.items()):
    med = [statistics.median(x[i] for x in v) for i in range(4)]
    floor = f"{floor_ms:.1f}" if prompts == 1 else "—"
    print(f"| {prompts} | {label} | {len(v)} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.1f} | {med[3]:.1f} | {floor} |")
print(f"\nFloor: {weight_bytes / 1e6:.1f} MB of weights per decode step (the GGUF's matrices as "
      f"stored) over {bandwidth} GB/s.")
print("Command (each run): `<binary> --log-level warn bench throughput --model default "
      "--num-prompts {1,64} --input-len 128 --output-len 64 --json` under `/usr/bin/time`.")
PY
tail -14 "$out"
