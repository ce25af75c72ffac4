#!/usr/bin/env bash
# One device call for KV compression on the GPU: the whole GPU test binary, compute-sanitizer on
# the signals and capture tests, and sieve generate with compression at Llama-3.1-8B shape (dummy
# weights). Carry one folder holding this script, bundle.tar.gz (PACK=... deploy/make_bundle.sh)
# and bench/configs/llama-3.1-8b.json, and run it from there: bash FOLDER/compression_check.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/out}
cd /tmp && tar -xzf "$here/bundle.tar.gz" && cd /tmp/bundle || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
timeout 300 ./run.sh sieve_cuda_tests --gtest_color=no > "$out/cuda_tests.log" 2>&1
echo "rc=$?" >> "$out/cuda_tests.log"
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|^\[ (compress|decide|capture)|Failure|rc=|Expected|Which is|actual|ran\." "$out/cuda_tests.log" | head -120
timeout 100 compute-sanitizer --target-processes all --tool memcheck ./run.sh sieve_cuda_tests \
  --gtest_filter='*CudaSignals*:*ModelCaptures*' > "$out/memcheck.log" 2>&1
echo "memcheck rc=$?"; tail -2 "$out/memcheck.log"
ids=$(python3 -c "import random; random.seed(3); print(','.join(str(random.randrange(1000, 120000)) for _ in range(4096)))")
for c in '' '{"method":"snapkv","keep_ratio":0.25}' '{"method":"gkv","budget":1024,"params":{"interval":64}}' '{"method":"knorm","budget":1024}'; do
  start=$(date +%s.%N)
  timeout 150 ./run.sh sieve --log-level info generate --device cuda --model "$here/llama-3.1-8b.json" \
    --load-format dummy --max-num-batched-tokens 4096 --prompt-token-ids "$ids" --max-tokens 256 \
    --ignore-eos --json ${c:+--compression "$c"} > "$out/gen.log" 2>&1
  rc=$?; end=$(date +%s.%N)
  echo "== compression ${c:-none}: rc=$rc wall $(python3 -c "print(round($end-$start,2))") s" | tee -a "$out/generate.log"
  grep -E "tokens/s|kv_tokens_kept|rror" "$out/gen.log" | sed 's/"token_ids":\[[^]]*\]//' | tee -a "$out/generate.log"
done
