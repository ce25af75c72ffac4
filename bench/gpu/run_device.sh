#!/usr/bin/env bash
# One device call: the GPU tests, a smoke run, and the first CUDA benchmarks, from an unpacked
# bundle (deploy/make_bundle.sh). Logs go to $OUT; a summary table is printed last.
#   (on the GPU machine) bench/gpu/run_device.sh BUNDLE_DIR
set -uo pipefail
bundle=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
cd "$bundle"
run() { ./run.sh "$@"; }
ids() { python3 -c "import random; random.seed($1); print(','.join(str(random.randrange(1000, 120000)) for _ in range($2)))"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"

echo "== GPU tests"
timeout 300 ./run.sh sieve_cuda_tests --gtest_color=no > "$out/cuda_tests.log" 2>&1
echo "rc=$?" >> "$out/cuda_tests.log"
grep -E "^\[  (PASSED|FAILED) |^\[ (golden|sampling)" "$out/cuda_tests.log"

echo "== smoke: a golden fixture on the GPU"
timeout 60 ./run.sh sieve --log-level info generate --device cuda \
  --model fixtures/golden/qwen2 --prompt-token-ids 5,6,7,8 --max-tokens 12 --ignore-eos --json \
  > "$out/smoke.log" 2>&1; echo "rc=$?" >> "$out/smoke.log"; tail -2 "$out/smoke.log"

echo "== floors (torch, same run)"
python3 - > "$out/floors.json" <<'PY'
import json, torch
torch.manual_seed(0)
def timed(fn, reps=20):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record(); fn(); end.record(); torch.cuda.synchronize(); times.append(start.elapsed_time(end) / 1e3)
    times.sort(); return times[len(times) // 2]
n = 4 << 30
a = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda"); b = torch.empty_like(a)
copy_s = timed(lambda: b.copy_(a))
x = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda"); y = torch.randn_like(x)
gemm_s = timed(lambda: x @ y)
print(json.dumps({"copy_bytes_per_s": 2 * n / copy_s, "gemm_flops_per_s": 2 * 8192**3 / gemm_s}))
PY
cat "$out/floors.json"

cfg=$repo/bench/configs/llama-3.1-8b.json
common=(--device cuda --model "$cfg" --load-format dummy --ignore-eos --json)
echo "== decode, batch 1, 512-token context (Llama-3.1-8B shape, dummy bf16)"
timeout 180 ./run.sh sieve --log-level info generate "${common[@]}" --max-num-batched-tokens 2048 \
  --prompt-token-ids "$(ids 1 512)" --max-tokens 256 > "$out/decode_b1.log" 2>&1
tail -1 "$out/decode_b1.log"

echo "== prefill, one 8192-token prompt"
timeout 180 ./run.sh sieve --log-level info generate "${common[@]}" --max-num-batched-tokens 8192 \
  --prompt-token-ids "$(ids 2 8192)" --max-tokens 2 > "$out/prefill_8k.log" 2>&1
tail -1 "$out/prefill_8k.log"

echo "== offline throughput, 1024 in / 128 out"
for seqs in 1 16 64 256; do
  timeout 150 ./run.sh sieve --log-level warn bench throughput --device cuda --model "$cfg" \
    --load-format dummy --num-prompts $seqs --input-len 1024 --output-len 128 --max-num-seqs $seqs \
    --max-num-batched-tokens 8192 --kv-cache-gib 40 --json > "$out/throughput_$seqs.log" 2>&1
  tail -1 "$out/throughput_$seqs.log"
done
