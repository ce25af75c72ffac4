#!/usr/bin/env bash
# Issue 6's measurements of `sieve serve` on the default model, each against a fresh server:
#   connections  the most concurrent streaming HTTP connections held with zero errors, with the
#                server's RSS sampled through the run (flat memory)
#   curve        latency and throughput against the Poisson request rate (JSON + PNG)
#   overhead     the HTTP path against `sieve bench throughput` on the same workload
# Results go to bench/results/serve_*.md (and .json/.png), with the command, machine and date.
# Sizes are small by default (the machine is shared); raise them with the variables below.
#
#   bench/serve/serve_bench.sh connections|curve|overhead|all
set -euo pipefail
cd "$(dirname "$0")/../.."
SIEVE=${SIEVE:-build/sieve}
PY=${PY:-.venv/bin/python}
CONNECTIONS=${CONNECTIONS:-"1024 1024 2048 4096"}  # streams held at once, one run each
RATES=${RATES:-"0.25,0.5,1,2,inf"}
CURVE_PROMPTS=${CURVE_PROMPTS:-24}
OVERHEAD_PROMPTS=${OVERHEAD_PROMPTS:-32}
PORT=${PORT:-18200}
out=bench/results
mkdir -p "$out"
machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) threads"

server_pid=""
start_server() {  # flags...
  OMP_WAIT_POLICY=PASSIVE "$SIEVE" --log-level warn serve --model default --host 127.0.0.1 \
    --port "$PORT" --grpc-port -1 "$@" &
  server_pid=$!
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
    sleep 0.2
  done
  echo "server did not start" >&2
  exit 1
}
stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || true
}
header() {  # file title
  [[ -f $1 ]] || echo "# $2" > "$1"
  printf '\n## %s — %s, load average %s at start\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    "$machine" "$(cut -d' ' -f1 /proc/loadavg)" >> "$1"
}

connections() {
  # One server for every run, so its memory is compared across runs: the KV arena and step
  # buffers are touched for the first time in the first run; later, larger runs should not grow.
  local md=$out/serve_connections.md
  header "$md" "Concurrent streaming HTTP connections held by sieve serve (bench/serve/serve_bench.sh connections)"
  local max=0
  for n in $CONNECTIONS; do ((n > max)) && max=$n; done
  local flags="--max-num-seqs 256 --max-queue $((max * 2)) --max-num-batched-tokens 2048"
  start_server $flags
  echo "| run | streams at once | completed | failed | peak in flight | server RSS start / peak / end MiB | TTFT p50 ms | E2E p99 ms | duration s |" >> "$md"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" >> "$md"
  local run=0 cmd=""
  for n in $CONNECTIONS; do
    run=$((run + 1))
    local json=$out/serve_connections_run$run.json
    cmd="$PY bench/serve/bench_serve.py --base-url http://127.0.0.1:$PORT --num-prompts $n --max-concurrency $n --input-len 16 --output-len 8 --server-pid $server_pid --json $json"
    $cmd > /dev/null || true
    $PY - "$json" "$run" >> "$md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["runs"][0]; m = r.get("server_rss_mb", {})
print(f"| {sys.argv[2]} | {r['num_prompts']} | {r['completed']} | {r['failed']} | {r['peak_in_flight']} | "
      f"{m.get('start', 0):.0f} / {m.get('peak', 0):.0f} / {m.get('end', 0):.0f} | "
      f"{r['ttft_ms']['p50']:.0f} | {r['e2e_ms']['p99']:.0f} | {r['duration_s']:.1f} |")
PY
  done
  stop_server
  printf '\nRuns in order against one `sieve serve %s`; each: `%s` (N = streams at once)\n' \
    "$flags" "${cmd//--num-prompts $n --max-concurrency $n/--num-prompts N --max-concurrency N}" >> "$md"
  tail -12 "$md"
}

curve() {
  local md=$out/serve_curve.md
  header "$md" "Latency and throughput against request rate (bench/serve/serve_bench.sh curve)"
  start_server --max-num-seqs 64
  local cmd="$PY bench/serve/bench_serve.py --base-url http://127.0.0.1:$PORT --num-prompts $CURVE_PROMPTS --input-len 128 --output-len 32 --request-rate $RATES --json $out/serve_curve.json --plot $out/serve_curve.png"
  $cmd > /dev/null || true
  stop_server
  echo "| rate req/s | completed | failed | req/s | output tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | ITL p50 / p99 ms | E2E p50 / p99 ms |" >> "$md"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" >> "$md"
  $PY - "$out/serve_curve.json" >> "$md" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["runs"]:
    f = lambda k: f"{r[k]['p50']:.0f} / {r[k]['p99']:.0f}"
    print(f"| {r['request_rate']} | {r['completed']} | {r['failed']} | {r['request_throughput']:.2f} | "
          f"{r['output_throughput']:.1f} | {f('ttft_ms')} | {f('tpot_ms')} | {f('itl_ms')} | {f('e2e_ms')} |")
PY
  printf '\nCommand: `%s` against `sieve serve --max-num-seqs 64`; plot: serve_curve.png\n' "$cmd" >> "$md"
  tail -10 "$md"
}

overhead() {
  local md=$out/serve_overhead.md
  header "$md" "HTTP path against the in-process engine on the same workload (bench/serve/serve_bench.sh overhead)"
  local n=$OVERHEAD_PROMPTS
  local offline="$SIEVE --log-level warn bench throughput --model default --num-prompts $n --input-len 128 --output-len 32 --max-num-seqs $n --kv-cache-gib 1 --json"
  local in_process
  in_process=$(OMP_WAIT_POLICY=PASSIVE $offline | tail -1)
  start_server --max-num-seqs "$n"
  local cmd="$PY bench/serve/bench_serve.py --base-url http://127.0.0.1:$PORT --num-prompts $n --input-len 128 --output-len 32 --json $out/serve_overhead.json"
  $cmd > /dev/null || true
  stop_server
  $PY - "$in_process" "$out/serve_overhead.json" >> "$md" <<'PY'
import json, sys
offline = json.loads(sys.argv[1]); http = json.load(open(sys.argv[2]))["runs"][0]
a, b = offline["output_tokens_per_s"], http["output_throughput"]
print("| path | output tok/s | requests/s | elapsed s |\n| --- | --- | --- | --- |")
print(f"| in-process (sieve bench throughput) | {a:.1f} | {offline['requests_per_s']:.2f} | {offline['elapsed_s']:.1f} |")
print(f"| HTTP (sieve serve + bench_serve.py, rate inf) | {b:.1f} | {http['request_throughput']:.2f} | {http['duration_s']:.1f} |")
print(f"\nHTTP overhead: {100 * (a - b) / a:.1f}% of output throughput "
      f"(failed requests: {http['failed']}).")
PY
  printf '\nCommands: `%s`; `%s` against `sieve serve --max-num-seqs %s`\n' "$offline" "$cmd" "$n" >> "$md"
  tail -9 "$md"
}

case "${1:-all}" in
  connections) connections ;;
  curve) curve ;;
  overhead) overhead ;;
  all) connections; curve; overhead ;;
  *) echo "usage: $0 connections|curve|overhead|all" >&2; exit 2 ;;
esac
