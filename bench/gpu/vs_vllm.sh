#!/usr/bin/env bash
# Sieve beside vLLM 0.26.0 on the four workloads of the throughput issue, in one device call:
# Llama-3.1-8B shape, dummy bf16 weights, --max-num-seqs 256 --max-num-batched-tokens 8192,
# prefix caching off, random prompt ids. vLLM cannot be installed on the development machines, so
# its figures are data here, as issue 16 reports them: vLLM 0.26.0 (V1 engine, FlashAttention 3,
# torch.compile, full CUDA graphs) on the GPU machine's H100, run beside Sieve's commit b83155f
# on the same workloads (the KV pool at gpu_memory_utilization 0.9: vLLM 451 840 tokens).
# Run from the folder holding bundle.tar.gz (deploy/make_bundle.sh with PACK=) and
# llama-3.1-8b.json (bench/configs/):
#   bash FOLDER/vs_vllm.sh
# SHAPES="1000:1024:512 200:256:4096" (prompts:in:out; empty: none) runs only those throughput rows, DECODE=0
# skips the batch-1 decode row (one device call holds about two rows).
# Prints a markdown table (Sieve / vLLM per row) and writes every run's log under $OUT.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
cd /tmp && rm -rf bundle && tar -xzf "$here/bundle.tar.gz" && cd /tmp/bundle || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/device.txt"
date -u +%FT%TZ | tee -a "$out/device.txt"
cfg=$here/llama-3.1-8b.json
common=(--device cuda --model "$cfg" --load-format dummy --max-num-seqs 256
        --max-num-batched-tokens 8192)

if [[ ${DECODE:-1} != 0 ]]; then
  echo "== decode, batch 1, 512-token prompt, 256 new tokens"
  ids=$(python3 -c "import random; random.seed(1); print(','.join(str(random.randrange(1000, 120000)) for _ in range(512)))")
  timeout 150 ./run.sh sieve --log-level warn generate "${common[@]}" --ignore-eos --json \
    --prompt-token-ids "$ids" --max-tokens 256 > "$out/vs_vllm_decode_b1.log" 2>&1
  echo "rc=$?"
fi
for shape in ${SHAPES-1000:256:256 1000:1024:512 200:256:4096}; do
  IFS=: read -r n in len <<< "$shape"
  echo "== bench throughput: $n prompts, $in in / $len out"
  timeout 400 ./run.sh sieve --log-level warn bench throughput "${common[@]}" --num-prompts "$n" \
    --input-len "$in" --output-len "$len" --json > "$out/vs_vllm_${n}x${in}x${len}.log" 2>&1
  echo "rc=$?"
done

OUT_DIR=$out python3 - <<'EOF'
import json, os
out = os.environ["OUT_DIR"]
def last_json(name):
    try:
        lines = [l for l in open(os.path.join(out, name)) if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except OSError:
        return None
# vLLM 0.26.0 on the same H100 kind (issue 16's table).
vllm = {"decode_b1": 160.4, "1000x256x256": (52.61, 13468), "1000x1024x512": (14.64, 7497),
        "200x256x4096": (None, 6153)}
print("| workload | vLLM 0.26.0 | Sieve | Sieve / vLLM | Sieve preemptions, mean / max batch |")
print("| --- | --- | --- | --- | --- |")
d = last_json("vs_vllm_decode_b1.log")
if d:
    s = d["decode_tokens_per_s"]
    print(f"| decode, batch 1, 512-token prompt | {vllm['decode_b1']} tok/s | {s:.1f} tok/s "
          f"| {s / vllm['decode_b1']:.2f} | |")
for key, label in [("1000x256x256", "1000 x 256/256"), ("1000x1024x512", "1000 x 1024/512"),
                   ("200x256x4096", "200 x 256/4096")]:
    r = last_json(f"vs_vllm_{key}.log")
    if not r:
        print(f"| {label} | | failed | | |")
        continue
    vr, vt = vllm[key]
    ratio = r["requests_per_s"] / vr if vr else r["output_tokens_per_s"] / vt
    v = f"{vr} req/s, {vt} out tok/s" if vr else f"{vt} out tok/s"
    step = r["decode_step"]
    print(f"| {label} | {v} | {r['requests_per_s']:.2f} req/s, {r['output_tokens_per_s']:.0f} "
          f"out tok/s | {ratio:.2f} | {r['preemptions']}, {step['mean_batch']:.0f} / "
          f"{step['max_batch']} |")
EOF
