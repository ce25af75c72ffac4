#!/usr/bin/env bash
# Issue 13, "memory turned into throughput", on the GPU: `sieve bench throughput` at
# Llama-3.1-8B shape (dummy bf16 weights), 200 random prompts of 256 tokens with 4096 new tokens
# each (the long-generation row of the vLLM comparison), --max-num-seqs 256
# --max-num-batched-tokens 8192, the same KV pool (gpu_memory_utilization 0.9) for every setting.
# Each argument is one setting: "none" or a compression JSON. Run from the folder holding
# bundle.tar.gz (deploy/make_bundle.sh with PACK=) and bench/configs/llama-3.1-8b.json:
#   bash FOLDER/compression_throughput.sh none '{"method":"streaming_llm","budget":512}'
# Prints one JSON line per setting (the bench's own) and writes the logs under $OUT.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
NUM_PROMPTS=${NUM_PROMPTS:-200}
OUTPUT_LEN=${OUTPUT_LEN:-4096}
cd /tmp && rm -rf bundle && tar -xzf "$here/bundle.tar.gz" && cd /tmp/bundle || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/device.txt"
date -u +%FT%TZ | tee -a "$out/device.txt"
i=0
for setting in "$@"; do
  i=$((i + 1))
  args=()
  [[ $setting != none ]] && args=(--compression "$setting")
  echo "== $setting: $NUM_PROMPTS prompts, 256 in / $OUTPUT_LEN out"
  timeout 560 ./run.sh sieve --log-level warn bench throughput --device cuda \
    --model "$here/llama-3.1-8b.json" --load-format dummy --num-prompts "$NUM_PROMPTS" \
    --input-len 256 --output-len "$OUTPUT_LEN" --max-num-seqs 256 --max-num-batched-tokens 8192 \
    --max-compressing-seqs 256 --json "${args[@]}" > "$out/throughput_$i.log" 2>&1
  echo "rc=$?"
  tail -1 "$out/throughput_$i.log"
done
