#!/usr/bin/env bash
# Long fuzzing runs before a resolve: every target in build-fuzz (scripts/fuzz.sh builds them),
# one at a time at nice 19, SECONDS each (default 600), in fork mode so that a crash is saved and
# the run goes on. Corpora grow in OUT/corpus_<target> (seeded from fuzz/corpus), crashes land in
# OUT/artifacts_<target>/, logs in OUT/<target>.log. Usage: fuzz/run_long.sh [OUT] [SECONDS]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/sieve-fuzz-long}
seconds=${2:-600}
mkdir -p "$out"
declare -A max_len=([gguf_fuzz]=16384 [http_fuzz]=8192 [openai_request_fuzz]=8192)
declare -A dict=([openai_request_fuzz]=fuzz/dict/openai.dict
                 [chat_template_fuzz]=fuzz/dict/chat_template.dict)
for target in openai_request_fuzz grpc_request_fuzz chat_template_fuzz http_fuzz gguf_fuzz \
              safetensors_fuzz; do
  corpus=${target%_fuzz}
  mkdir -p "$out/corpus_$target" "$out/artifacts_$target"
  args=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 -max_total_time="$seconds"
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$out/artifacts_$target/" -max_len="${max_len[$target]:-4096}")
  [[ -n ${dict[$target]:-} ]] && args+=(-dict="${dict[$target]}")
  echo "$(date -u +%FT%TZ) $target start" >> "$out/summary.log"
  nice -n 19 "build-fuzz/fuzz/$target" "${args[@]}" "$out/corpus_$target" "fuzz/corpus/$corpus" \
    > "$out/$target.log" 2>&1
  echo "$(date -u +%FT%TZ) $target exit $? crashes $(ls "$out/artifacts_$target" | wc -l)" \
    >> "$out/summary.log"
done
