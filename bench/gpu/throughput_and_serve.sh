#!/usr/bin/env bash
# One device call (issue 7): decode at batch 1, `sieve bench throughput` on 1000 random prompts
# of 1024 tokens with 512 new tokens each and on 1000 of 256 / 256 (the workload of the vLLM
# figure cited in bench/results/cuda_h100.md), `sieve bench serve`'s client
# (bench/serve/bench_serve.py) against `sieve serve` at several Poisson rates, and Hugging Face
# transformers `generate` on the same shape as the peer. Llama-3.1-8B shape, dummy bf16 weights.
# Run from an unpacked bundle (deploy/make_bundle.sh); logs and JSON lines go to $OUT.
#   (on the GPU machine) bench/gpu/throughput_and_serve.sh BUNDLE_DIR
set -uo pipefail
bundle=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
cfg=$repo/bench/configs/llama-3.1-8b.json
ids() { python3 -c "import random; random.seed($1); print(','.join(str(random.randrange(1000, 120000)) for _ in range($2)))"; }
cd "$bundle"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
date -u +%FT%TZ >> "$out/device.txt"

echo "== decode, batch 1, 512-token context"
timeout 120 ./run.sh sieve --log-level warn generate --device cuda --model "$cfg" --load-format dummy \
  --ignore-eos --json --max-num-batched-tokens 2048 --prompt-token-ids "$(ids 1 512)" \
  --max-tokens 256 > "$out/decode_b1.log" 2>&1
tail -1 "$out/decode_b1.log" | python3 -c 'import json,sys; print("decode tok/s", json.load(sys.stdin)["decode_tokens_per_s"])'

echo "== bench throughput: 1000 prompts, 1024 in / 512 out"
timeout 300 ./run.sh sieve --log-level warn bench throughput --device cuda --model "$cfg" \
  --load-format dummy --num-prompts 1000 --input-len 1024 --output-len 512 --max-num-seqs 256 \
  --max-num-batched-tokens 8192 --json > "$out/throughput_1000.log" 2>&1
tail -1 "$out/throughput_1000.log"

echo "== bench throughput: 1000 prompts, 256 in / 256 out (vLLM's benchmark_throughput shape)"
timeout 200 ./run.sh sieve --log-level warn bench throughput --device cuda --model "$cfg" \
  --load-format dummy --num-prompts 1000 --input-len 256 --output-len 256 --max-num-seqs 256 \
  --max-num-batched-tokens 8192 --json > "$out/throughput_256.log" 2>&1
tail -1 "$out/throughput_256.log"

echo "== bench serve: Poisson rates against sieve serve (HTTP, streaming)"
./run.sh sieve --log-level warn serve --device cuda --model "$cfg" --load-format dummy \
  --port 18300 --grpc-port -1 --max-num-seqs 256 --max-num-batched-tokens 8192 \
  --no-enable-prefix-caching \
  > "$out/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do curl -sf http://127.0.0.1:18300/health >/dev/null && break; sleep 1; done
timeout 200 python3 "$repo/bench/serve/bench_serve.py" --base-url http://127.0.0.1:18300 \
  --num-prompts 200 --input-len 1024 --output-len 128 --vocab-size 128000 \
  --request-rate 4,8,16,inf --json "$out/serve.json" > "$out/serve_bench.log" 2>&1
grep -E "^==|throughput|TTFT|TPOT" "$out/serve_bench.log"
kill -TERM $server; wait $server

echo "== Hugging Face transformers generate, same shape"
cd "$repo"
timeout 150 python3 bench/gpu/hf_generate.py --cases 1x512x256,64x1024x512 > "$out/hf.jsonl" 2> "$out/hf.err"
cat "$out/hf.jsonl"; tail -2 "$out/hf.err"
