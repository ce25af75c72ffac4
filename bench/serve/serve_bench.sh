#!/usr/bin/env bash
# Issue 6's measurements of `sieve serve` on the default model, each against a fresh server:
#   connections  the most concurrent streaming HTTP connections held with zero errors, with the
#                server's RSS sampled through the run (flat memory)
#   curve        latency and throughput against the Poisson request rate (JSON + PNG)
#   overhead     the HTTP path against `sieve bench throughput` on the same workload, in
#                OVERHEAD_PAIRS pairs of alternating order (PIN=S:C puts the engine on CPUs S
#                and the client on CPUs C)
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
OVERHEAD_PAIRS=${OVERHEAD_PAIRS:-4}  # in-process / HTTP pairs, order alternating
PORT=${PORT:-18200}
out=bench/results
mkdir -p "$out"
machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) threads"

server_pid=""
start_server() {  # flags...
  start_server_pinned "" "$@"
}
start_server_pinned() {  # "taskset -c CPUS" or "", then flags...
  local pin=$1
  shift
  env OMP_WAIT_POLICY=PASSIVE ${omp_threads:-} $pin "$SIEVE" --log-level warn serve --model default \
    --host 127.0.0.1 --port "$PORT" --grpc-port -1 "$@" &
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

# One in-process run and one HTTP run of the same workload (random 128-token prompts, 32 output
# tokens each, all sent at once), in alternating order pair by pair so that a change in the
# machine's load does not always fall on the same side. With PIN=S:C the engine (in-process or
# server) runs on CPUs S with OMP_NUM_THREADS = their count, the client on CPUs C.
overhead() {
  local md=$out/serve_overhead.md
  header "$md" "HTTP path against the in-process engine on the same workload (bench/serve/serve_bench.sh overhead)"
  local n=$OVERHEAD_PROMPTS pairs=$OVERHEAD_PAIRS
  local offline="$SIEVE --log-level warn bench throughput --model default --num-prompts $n --input-len 128 --output-len 32 --max-num-seqs $n --kv-cache-gib 1 --json"
  local cmd="$PY bench/serve/bench_serve.py --base-url http://127.0.0.1:$PORT --num-prompts $n --input-len 128 --output-len 32 --json $out/serve_overhead.json"
  local pin_engine="" pin_client="" threads=""
  omp_threads=""
  if [[ -n ${PIN:-} ]]; then
    pin_engine="taskset -c ${PIN%%:*}"
    pin_client="taskset -c ${PIN##*:}"
    threads=$(taskset -c "${PIN%%:*}" nproc)
    omp_threads="OMP_NUM_THREADS=$threads"
  fi
  local rows=$(mktemp)
  local hz
  hz=$(getconf CLK_TCK)
  # CPU seconds all processes used (steal included), for what others took during a run.
  busy_s() { awk -v hz="$hz" '/^cpu / {print ($2 + $3 + $4 + $7 + $8 + $9) / hz}' /proc/stat; }
  in_process_run() {
    in_load=$(cut -d' ' -f1 /proc/loadavg)
    local times busy0
    times=$(mktemp)
    busy0=$(busy_s)
    in_json=$(env OMP_WAIT_POLICY=PASSIVE $omp_threads /usr/bin/time -f "%U %S" -o "$times" \
      $pin_engine $offline | tail -1)
    in_cpu_s=$(awk '{print $1 + $2}' "$times")  # start-up included; see http_run
    in_others_s=$(awk -v b0="$busy0" -v b1="$(busy_s)" -v own="$in_cpu_s" \
      'BEGIN {print b1 - b0 - own}')
    rm -f "$times"
  }
  http_run() {
    start_server_pinned "$pin_engine" --max-num-seqs "$n"
    http_load=$(cut -d' ' -f1 /proc/loadavg)
    local ticks0 ticks1 times busy0
    ticks0=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")  # its start-up: model, KV cache
    times=$(mktemp)
    busy0=$(busy_s)
    /usr/bin/time -f "%U %S" -o "$times" $pin_client $cmd > /dev/null || true
    ticks1=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
    client_cpu_s=$(awk '{print $1 + $2}' "$times")
    rm -f "$times"
    http_cpu_s=$(awk -v t=$((ticks1 - ticks0)) -v hz="$hz" 'BEGIN {print t / hz}')
    startup_cpu_s=$(awk -v t="$ticks0" -v hz="$hz" 'BEGIN {print t / hz}')
    http_others_s=$(awk -v b0="$busy0" -v b1="$(busy_s)" -v own="$http_cpu_s" \
      -v client="$client_cpu_s" 'BEGIN {print b1 - b0 - own - client}')
    http_steps=$(curl -s "http://127.0.0.1:$PORT/metrics" | sed -n 's/^sieve:engine_steps_total{[^}]*} //p')
    stop_server
  }
  for pair in $(seq 1 "$pairs"); do
    if ((pair % 2)); then in_process_run; http_run; order="in-process, HTTP"
    else http_run; in_process_run; order="HTTP, in-process"; fi
    # The in-process CPU time less the server's start-up CPU time (the same model load and KV
    # cache) approximates what its requests cost, to set beside the server's during the client.
    $PY - "$pair" "$order" "$in_load" "$in_json" "$http_load" "$out/serve_overhead.json" \
      "$in_cpu_s" "$startup_cpu_s" "$http_cpu_s" "$http_steps" "$client_cpu_s" \
      "$in_others_s" "$http_others_s" >> "$rows" <<'PY'
import json, sys
(pair, order, in_load, offline, http_load, path, in_cpu, startup, cpu, steps, client,
 in_others, http_others) = sys.argv[1:]
offline = json.loads(offline); http = json.load(open(path))["runs"][0]
a, b = offline["output_tokens_per_s"], http["output_throughput"]
print(f"| {pair} | {order} | {in_load} | {float(in_others):.1f} | {a:.1f} | {offline['steps']} | "
      f"{float(in_cpu) - float(startup):.1f} | {http_load} | {float(http_others):.1f} | {b:.1f} | "
      f"{float(steps):.0f} | {float(cpu):.1f} | {float(client):.1f} | {http['failed']} | "
      f"{100 * (a - b) / a:.1f}% |")
PY
  done
  {
    echo "| pair | order | in-process: load | others' CPU s | tok/s | steps | CPU s | HTTP: load | others' CPU s | tok/s | steps | server CPU s | client CPU s | failed | HTTP overhead |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    cat "$rows"
    $PY - "$rows" <<'PY'
import statistics, sys
rows = [l.split("|") for l in open(sys.argv[1])]
a = [float(r[5]) for r in rows]; b = [float(r[10]) for r in rows]
o = [float(r[15].strip().rstrip("%")) for r in rows]
print(f"\nMean of the pairs: in-process {statistics.mean(a):.1f} tok/s, HTTP {statistics.mean(b):.1f} "
      f"tok/s, overhead {100 * (statistics.mean(a) - statistics.mean(b)) / statistics.mean(a):.1f}%; "
      f"per pair median {statistics.median(o):.1f}%, range {min(o):.1f}% to {max(o):.1f}%.")
PY
    printf '\nCommands: `%s`; `%s` against `sieve serve --max-num-seqs %s`' "$offline" "$cmd" "$n"
    if [[ -n ${PIN:-} ]]; then
      printf '; engine on CPUs %s (OMP_NUM_THREADS=%s), client on CPUs %s (taskset -c)' \
        "${PIN%%:*}" "$threads" "${PIN##*:}"
    fi
    printf '; %s pairs, order alternating. Binary: `%s` at %s.\n' "$pairs" "$SIEVE" \
      "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench/results' || echo ' with local changes')"
    printf '%s\n' "Load: the 1-minute load average as the run began (a run before it included)." \
      "Others' CPU s: what every other process on the machine took during the run (steal" \
      "included). CPU s: the in-process run's CPU time less the server's start-up CPU time (the" \
      "same model load and KV cache); server CPU s: the server's while the client ran."
  } >> "$md"
  rm -f "$rows"
  tail -$((pairs + 11)) "$md"
}

case "${1:-all}" in
  connections) connections ;;
  curve) curve ;;
  overhead) overhead ;;
  all) connections; curve; overhead ;;
  *) echo "usage: $0 connections|curve|overhead|all" >&2; exit 2 ;;
esac
