#!/usr/bin/env bash
# Where a batch-1 decode step's GPU time goes: Nsight Compute times every kernel of one eager
# decode step (Llama-3.1-8B shape, dummy bf16, 512-token context), summed by kernel name against
# the step's weight-read floor. Run from an unpacked bundle; the table goes to $OUT/profile.txt.
#   (on the GPU machine) bench/gpu/profile_decode.sh BUNDLE_DIR [BATCH]
set -uo pipefail
bundle=$(cd "$1" && pwd)
batch=${2:-1}
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
cd "$bundle"
cfg=$repo/bench/configs/llama-3.1-8b.json
# The prefill steps (512-token prompts in chunks of 8192 tokens) and one decode step are skipped
# (about 420 launches a step); the next 420 launches cover one decode step.
chunk=8192
skip=$(( ((batch * 512 + chunk - 1) / chunk + 2) * 420 ))
timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
  --launch-skip "$skip" --launch-count 420 \
  ./run.sh sieve --log-level warn bench throughput --device cuda --model "$cfg" --load-format dummy \
  --num-prompts "$batch" --input-len 512 --output-len 8 --max-num-seqs "$batch" \
  --max-num-batched-tokens "$chunk" --enforce-eager \
  > "$out/ncu_b$batch.csv" 2> "$out/ncu_b$batch.err"
python3 - "$out/ncu_b$batch.csv" <<'PY' | tee "$out/profile_b$batch.txt"
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
header = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
names = rows[header]
k, t = names.index("Kernel Name"), names.index("gpu__time_duration.sum")
by = collections.defaultdict(lambda: [0, 0.0])
total = 0.0
kernels = rows[header + 2:]
for r in kernels:
    try:
        ns = float(r[t].replace(",", ""))
    except ValueError:
        continue
    name = r[k].split("(")[0][:90]
    by[name][0] += 1
    by[name][1] += ns
    total += ns
print(f"{len(kernels)} kernels, {total / 1e6:.3f} ms of GPU time")
for name, (n, ns) in sorted(by.items(), key=lambda x: -x[1][1]):
    print(f"{ns / 1e6:8.3f} ms {n:5d}x  {name}")
PY
