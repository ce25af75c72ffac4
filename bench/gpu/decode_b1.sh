#!/usr/bin/env bash
# Decode at batch 1, 512-token context (Llama-3.1-8B shape, dummy bf16): CUDA graphs and eager,
# with programmatic dependent launch on and off (SIEVE_PDL), alternated over REPEATS rounds so the
# figures compared come from the same minutes. Run from an unpacked bundle; logs go to $OUT.
#   (on the GPU machine) bench/gpu/decode_b1.sh BUNDLE_DIR [REPEATS]
set -uo pipefail
bundle=$(cd "$1" && pwd)
repeats=${2:-2}
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
cd "$bundle"
ids() { python3 -c "import random; random.seed($1); print(','.join(str(random.randrange(1000, 120000)) for _ in range($2)))"; }
cfg=$repo/bench/configs/llama-3.1-8b.json
prompt=$(ids 1 512)
for round in $(seq "$repeats"); do
  for pdl in 1 0; do
    for mode in graphs eager; do
      extra=(); [[ $mode == eager ]] && extra=(--enforce-eager)
      log=$out/decode_b1_${mode}_pdl${pdl}_r$round.log
      SIEVE_PDL=$pdl timeout 120 ./run.sh sieve --log-level info generate --device cuda \
        --model "$cfg" --load-format dummy --ignore-eos --json "${extra[@]}" \
        --max-num-batched-tokens 2048 --prompt-token-ids "$prompt" --max-tokens 256 > "$log" 2>&1
      echo "round $round pdl $pdl $mode $(tail -1 "$log" | python3 -c 'import json,sys,hashlib; d=json.load(sys.stdin); print(d["decode_tokens_per_s"], "tok/s, tokens md5", hashlib.md5(str(d["token_ids"]).encode()).hexdigest()[:10])' 2>&1)"
    done
  done
done
