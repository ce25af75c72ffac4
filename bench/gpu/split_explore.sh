#!/usr/bin/env bash
# Decode step times against the FMA attention's split target (SIEVE_SPLIT_MULT, read by a
# diagnostic build of kernels/cuda/attention.cu's target_per_head; the product has no such knob):
# how bench/results/gpu-2026-11-24-s3/split_mult.txt was measured.
#   (on the GPU machine, from the repository) bench/gpu/split_explore.sh CONFIG_JSON
cd /tmp/b/bundle
cfg=$1
run() { ./run.sh sieve --log-level warn bench throughput --device cuda --model $cfg --load-format dummy --num-prompts $1 --input-len $2 --output-len 32 --max-num-seqs $1 --max-num-batched-tokens 8192 --json 2>/dev/null | tail -1 | python3 -c 'import json,sys; d=json.load(sys.stdin)["decode_step"]; print(round(d["mean_batch"],2), round(d["mean_ms"],3), round(d["p50_ms"],3))'; }
for mult in 2 4 6 8; do
  for cfgs in "1 512" "1 4096" "16 1024" "16 4096" "64 4096" "256 1024"; do
    set -- $cfgs
    echo "mult $mult b$1 ctx$2 $(SIEVE_SPLIT_MULT=$mult run $1 $2)"
  done
done
