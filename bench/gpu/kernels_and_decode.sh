#!/usr/bin/env bash
# One device call (issue 7): the GPU test binary, the floors measured with torch, decode at batch 1
# with and without CUDA graphs, the 8k prefill, and the decode step-time matrix (batch 1/16/64/256
# at 1k and 4k contexts), all on the Llama-3.1-8B shape with random bf16 weights. Run from an
# unpacked bundle (deploy/make_bundle.sh); logs and one JSON line per benchmark go to $OUT.
#   (on the GPU machine) bench/gpu/kernels_and_decode.sh BUNDLE_DIR
set -uo pipefail
bundle=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
cd "$bundle"
ids() { python3 -c "import random; random.seed($1); print(','.join(str(random.randrange(1000, 120000)) for _ in range($2)))"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
date -u +%FT%TZ >> "$out/device.txt"

echo "== GPU tests"
timeout 420 ./run.sh sieve_cuda_tests --gtest_color=no > "$out/cuda_tests.log" 2>&1
echo "rc=$?" >> "$out/cuda_tests.log"
grep -E "^\[  (PASSED|FAILED) |^\[ (golden|engine|sampling)|rc=" "$out/cuda_tests.log"

echo "== floors (torch, same run)"
python3 "$repo/bench/gpu/floors.py" > "$out/floors.json"
cat "$out/floors.json"

cfg=$repo/bench/configs/llama-3.1-8b.json
common=(--device cuda --model "$cfg" --load-format dummy --ignore-eos --json)
echo "== decode, batch 1, 512-token context: graphs, then eager"
for mode in graphs eager; do
  extra=(); [[ $mode == eager ]] && extra=(--enforce-eager)
  timeout 120 ./run.sh sieve --log-level info generate "${common[@]}" "${extra[@]}" \
    --max-num-batched-tokens 2048 --prompt-token-ids "$(ids 1 512)" --max-tokens 256 \
    > "$out/decode_b1_$mode.log" 2>&1
  echo "$mode $(tail -1 "$out/decode_b1_$mode.log" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["decode_tokens_per_s"])')"
done
grep -h "captured\|KV cache\|GPU memory" "$out/decode_b1_graphs.log"

echo "== prefill, one 8192-token prompt"
timeout 120 ./run.sh sieve --log-level info generate "${common[@]}" --max-num-batched-tokens 8192 \
  --prompt-token-ids "$(ids 2 8192)" --max-tokens 2 > "$out/prefill_8k.log" 2>&1
tail -1 "$out/prefill_8k.log" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("prefill tok/s", d["prefill_tokens_per_s"])'

echo "== decode step times (bench throughput: prompts of the context length, 64 new tokens)"
for ctx in 1024 4096; do
  for batch in 1 16 64 256; do
    # 256 x 4160 tokens of bf16 KV (128 KiB each) is 130 GiB: more than the GPU holds.
    if (( ctx == 4096 && batch == 256 )); then continue; fi
    timeout 150 ./run.sh sieve --log-level warn bench throughput --device cuda --model "$cfg" \
      --load-format dummy --num-prompts $batch --input-len $ctx --output-len 64 \
      --max-num-seqs $batch --max-num-batched-tokens 8192 --json > "$out/step_${batch}x${ctx}.log" 2>&1
    echo "batch $batch ctx $ctx $(tail -1 "$out/step_${batch}x${ctx}.log")"
  done
done
