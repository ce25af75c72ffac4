#!/usr/bin/env python3
"""`sieve bench serve`: a load generator for a running `sieve serve`, as vLLM's
benchmark_serving measures one.

Sends random prompts of a given input length (token ids drawn uniformly, as vLLM's random
dataset) asking for a given number of output tokens (EOS ignored), over HTTP (/v1/completions,
streamed) or gRPC (sieve.v1 Generate), either at a fixed concurrency or as Poisson arrivals at
one or more request rates. Reports request and token throughput, TTFT / TPOT / ITL / E2E at
mean, p50, p90 and p99, and failures; --json writes every run, --plot draws latency and
throughput against request rate (matplotlib).

Python rather than C++: asyncio holds thousands of concurrent streams in a few lines, the gRPC
client is generated from proto/sieve.proto by grpcio-tools, matplotlib draws the plot, and the
numbers are taken the way vLLM's own (Python) benchmark takes them.

  .venv/bin/python bench/serve/bench_serve.py --base-url http://127.0.0.1:8000 \\
      --num-prompts 64 --input-len 128 --output-len 32 --request-rate 1,2,4,inf \\
      --json /tmp/serve.json --plot /tmp/serve.png
"""

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import time
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Result:
    """One request's timings (seconds) and outcome."""

    def __init__(self, prompt_len):
        self.prompt_len = prompt_len
        self.ok = False
        self.error = ""
        self.ttft = 0.0
        self.itl = []
        self.e2e = 0.0
        self.output_tokens = 0


# --- HTTP: a minimal asyncio HTTP/1.1 client (one connection per request, chunked SSE) -------

async def read_chunked(reader):
    """Yields the body of a chunked response piece by piece."""
    while True:
        size_line = await reader.readline()
        if not size_line:
            raise ConnectionError("connection closed inside the body")
        size = int(size_line.strip().split(b";")[0], 16)
        if size == 0:
            await reader.readline()
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def http_request(args, prompt, result):
    url = urllib.parse.urlparse(args.base_url)
    body = {"model": args.model, "prompt": prompt, "max_tokens": args.output_len,
            "ignore_eos": True, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    payload = json.dumps(body).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {url.hostname}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            f"Connection: close\r\n")
    if args.api_key:
        head += f"Authorization: Bearer {args.api_key}\r\n"
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(url.hostname, url.port or 80, limit=1 << 20)
    try:
        writer.write(head.encode() + b"\r\n" + payload)
        await writer.drain()
        status = await reader.readline()
        headers = (await reader.readuntil(b"\r\n\r\n")).lower()
        if b" 200 " not in status:
            rest = await reader.read(4096)
            raise RuntimeError(status.decode().strip() + " " + rest.decode(errors="replace"))
        if b"transfer-encoding: chunked" not in headers:
            raise RuntimeError("not a chunked stream")
        buffer = b""
        last = None
        async for piece in read_chunked(reader):
            buffer += piece
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                    continue
                chunk = json.loads(event[6:])
                if "error" in chunk:
                    raise RuntimeError(chunk["error"]["message"])
                if chunk.get("usage"):
                    result.output_tokens = chunk["usage"]["completion_tokens"]
                # A token arrived: text, or a chunk of its own without a finish reason (a server
                # with no tokenizer streams empty text per token).
                if any(c.get("text") or c.get("finish_reason") is None
                       for c in chunk.get("choices", [])):
                    now = time.perf_counter()
                    if last is None:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
        result.e2e = time.perf_counter() - start
        result.ok = result.output_tokens > 0
        if not result.ok:
            result.error = "no usage in the stream"
    finally:
        writer.close()


# --- gRPC ------------------------------------------------------------------------------------

def grpc_modules():
    import tempfile
    from grpc_tools import protoc
    out = tempfile.mkdtemp(prefix="sieve_bench_proto_")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    if protoc.main(["protoc", f"-I{REPO}", f"-I{include}", f"--python_out={out}",
                    f"--grpc_python_out={out}", os.path.join(REPO, "proto/sieve.proto")]) != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, out)
    from proto import sieve_pb2, sieve_pb2_grpc
    return sieve_pb2, sieve_pb2_grpc


async def grpc_request(args, prompt, result, stub, pb):
    request = pb.GenerateRequest(
        token_ids=pb.TokenIds(ids=prompt),
        sampling=pb.SamplingParams(temperature=0, max_tokens=args.output_len,
                                   min_tokens=args.output_len, ignore_eos=True))
    start = time.perf_counter()
    last = None
    async for response in stub.Generate(request):
        if response.token_ids:
            now = time.perf_counter()
            if last is None:
                result.ttft = now - start
            else:
                result.itl.extend([(now - last) / len(response.token_ids)] *
                                  len(response.token_ids))
            last = now
        if response.finished:
            result.output_tokens = response.usage.completion_tokens
    result.e2e = time.perf_counter() - start
    result.ok = result.output_tokens > 0


# --- One run ---------------------------------------------------------------------------------

def percentiles(values_s):
    if not values_s:
        return {"mean": 0, "p50": 0, "p90": 0, "p99": 0}
    ms = sorted(v * 1e3 for v in values_s)

    def pct(p):
        return ms[min(len(ms) - 1, int(round(p / 100 * (len(ms) - 1))))]
    return {"mean": statistics.fmean(ms), "p50": pct(50), "p90": pct(90), "p99": pct(99)}


def server_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


async def run(args, rate, prompts, grpc_stub=None, pb=None):
    semaphore = asyncio.Semaphore(args.max_concurrency or len(prompts))
    rng = random.Random(args.seed)
    results = [Result(len(p)) for p in prompts]
    in_flight = 0
    peak_in_flight = 0
    rss = []

    async def one(prompt, result):
        nonlocal in_flight, peak_in_flight
        async with semaphore:
            in_flight += 1
            peak_in_flight = max(peak_in_flight, in_flight)
            try:
                if grpc_stub is not None:
                    await grpc_request(args, prompt, result, grpc_stub, pb)
                else:
                    await http_request(args, prompt, result)
            except Exception as e:  # noqa: a failure is a result
                result.ok = False
                result.error = repr(e)[:300]
            in_flight -= 1

    async def sample_rss():
        while True:
            value = server_rss_mb(args.server_pid)
            if value is not None:
                rss.append((time.perf_counter() - start, value, in_flight))
            await asyncio.sleep(0.5)

    start = time.perf_counter()
    sampler = asyncio.create_task(sample_rss()) if args.server_pid else None
    tasks = []
    for prompt, result in zip(prompts, results):
        tasks.append(asyncio.create_task(one(prompt, result)))
        if rate != float("inf"):
            await asyncio.sleep(rng.expovariate(rate))
    await asyncio.gather(*tasks)
    duration = time.perf_counter() - start
    if sampler:
        sampler.cancel()

    good = [r for r in results if r.ok]
    output_tokens = sum(r.output_tokens for r in good)
    tpot = [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in good if r.output_tokens > 1]
    summary = {
        "request_rate": "inf" if rate == float("inf") else rate,
        "max_concurrency": args.max_concurrency,
        "backend": args.backend,
        "num_prompts": len(prompts),
        "input_len": args.input_len,
        "output_len": args.output_len,
        "duration_s": duration,
        "completed": len(good),
        "failed": len(results) - len(good),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "peak_in_flight": peak_in_flight,
        "request_throughput": len(good) / duration,
        "output_throughput": output_tokens / duration,
        "total_token_throughput": (output_tokens + sum(r.prompt_len for r in good)) / duration,
        "ttft_ms": percentiles([r.ttft for r in good]),
        "tpot_ms": percentiles(tpot),
        "itl_ms": percentiles([t for r in good for t in r.itl]),
        "e2e_ms": percentiles([r.e2e for r in good]),
    }
    if rss:
        summary["server_rss_mb"] = {"start": rss[0][1], "peak": max(v for _, v, _ in rss),
                                    "end": rss[-1][1],
                                    "samples": [[round(t, 1), round(v, 1), n] for t, v, n in rss]}
    return summary


def print_summary(s):
    print(f"\n== rate {s['request_rate']} req/s, concurrency {s['max_concurrency'] or 'unbounded'}"
          f" ({s['backend']}) ==")
    print(f"completed {s['completed']}, failed {s['failed']}, {s['duration_s']:.1f} s, "
          f"peak in flight {s['peak_in_flight']}")
    for e in s["errors"]:
        print("  error:", e)
    print(f"request throughput {s['request_throughput']:.2f} req/s, output "
          f"{s['output_throughput']:.1f} tok/s, total {s['total_token_throughput']:.1f} tok/s")
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        p = s[key]
        print(f"{key[:-3].upper():5s} ms: mean {p['mean']:9.1f}  p50 {p['p50']:9.1f}  "
              f"p90 {p['p90']:9.1f}  p99 {p['p99']:9.1f}")
    if "server_rss_mb" in s:
        m = s["server_rss_mb"]
        print(f"server RSS MiB: start {m['start']:.0f}, peak {m['peak']:.0f}, end {m['end']:.0f}")


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # An unbounded run ("inf") is drawn at the rate it achieved.
    finite = sorted(runs, key=lambda r: r["request_throughput"] if r["request_rate"] == "inf"
                    else r["request_rate"])
    rates = [r["request_throughput"] if r["request_rate"] == "inf" else r["request_rate"]
             for r in finite]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E")):
        left.plot(rates, [r[key]["p50"] for r in finite], "o-", label=f"{label} p50")
        left.plot(rates, [r[key]["p99"] for r in finite], "x--", label=f"{label} p99")
    left.set_xlabel("request rate (req/s)")
    left.set_ylabel("latency (ms)")
    left.set_yscale("log")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    right.plot(rates, [r["output_throughput"] for r in finite], "o-")
    right.set_xlabel("request rate (req/s)")
    right.set_ylabel("output tokens/s")
    right.grid(alpha=0.3)
    first = runs[0]
    fig.suptitle(f"sieve serve ({first['backend']}): {first['input_len']} in / "
                 f"{first['output_len']} out tokens, {first['num_prompts']} prompts per rate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["http", "grpc"], default="http")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--grpc-target", default="127.0.0.1:50051")
    parser.add_argument("--model", default="", help="served model name (default: the server's)")
    parser.add_argument("--api-key", default=os.environ.get("SIEVE_API_KEY", ""))
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--vocab-size", type=int, default=32000,
                        help="prompt ids are drawn from [100, vocab-size)")
    parser.add_argument("--request-rate", default="inf",
                        help="Poisson arrival rates in req/s, comma-separated; inf = all at once")
    parser.add_argument("--max-concurrency", type=int, default=0,
                        help="most requests in flight (0 = no bound)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-pid", type=int, default=0, help="sample this process's RSS")
    parser.add_argument("--json", default="", help="write every run's summary here")
    parser.add_argument("--plot", default="", help="PNG of latency and throughput vs rate")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.backend == "http" and not args.model:
        request = urllib.request.Request(args.base_url + "/v1/models")
        if args.api_key:
            request.add_header("Authorization", f"Bearer {args.api_key}")
        with urllib.request.urlopen(request, timeout=30) as r:
            args.model = json.load(r)["data"][0]["id"]
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(100, args.vocab_size) for _ in range(args.input_len)]
               for _ in range(args.num_prompts)]
    rates = [float(r) for r in args.request_rate.split(",")]

    async def all_runs():
        stub = pb = channel = None
        if args.backend == "grpc":
            import grpc
            pb, rpc = grpc_modules()
            channel = grpc.aio.insecure_channel(args.grpc_target)
            stub = rpc.SieveStub(channel)
        runs = []
        for rate in rates:
            summary = await run(args, rate, prompts, stub, pb)
            print_summary(summary)
            runs.append(summary)
        if channel is not None:
            await channel.close()
        return runs

    runs = asyncio.run(all_runs())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "runs": runs}, f, indent=1)
    if args.plot:
        plot(runs, args.plot)
    return 0 if all(r["failed"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
