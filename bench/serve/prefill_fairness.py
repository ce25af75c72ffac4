#!/usr/bin/env python3
"""Head-of-line blocking by a long prefill (issue 12, item 7): starts `sieve serve`, streams one
long completion (~8000 prompt tokens of text), and `--delay` seconds later one short one
(a few tokens); reports the short request's time to first token (TTFT) and the long one's, for
each scheduler setting given with --config LABEL='FLAGS' (flags appended to `sieve serve`).

  .venv/bin/python bench/serve/prefill_fairness.py --sieve build/sieve \\
      --config "before=--long-prefill-token-threshold 8192 --max-num-partial-prefills 4096" \\
      --config "after=" --repeats 2
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time

import requests

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly juggle "
         "amber lanterns near the old harbour and count distant ships").split()


def long_text(base, num_tokens):
    """Text that the served model's tokenizer turns into `num_tokens` tokens (within a few)."""
    words = [WORDS[(i * 7 + i // len(WORDS)) % len(WORDS)] for i in range(num_tokens * 2)]
    low, high = 1, len(words)
    while low < high:  # the most words whose tokens fit
        mid = (low + high + 1) // 2
        count = requests.post(f"{base}/tokenize", json={"prompt": " ".join(words[:mid])},
                              timeout=60).json()["count"]
        low, high = (mid, high) if count <= num_tokens else (low, mid - 1)
    return " ".join(words[:low])


def stream_ttft(base, prompt, max_tokens, out, key, start):
    """Streams a completion; stores (seconds from `start` to the first token, total seconds)."""
    sent = time.monotonic()
    body = {"model": "default", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "ignore_eos": True}
    first = None
    with requests.post(f"{base}/v1/completions", json=body, stream=True, timeout=3600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]" and first is None:
                first = time.monotonic()
    out[key] = {"sent_s": round(sent - start, 2), "ttft_s": round(first - sent, 2),
                "e2e_s": round(time.monotonic() - sent, 2)}


def run(args, label, flags):
    log = open(f"/tmp/prefill_fairness_{label}.log", "w")
    cmd = [args.sieve, "serve", "--model", args.model, "--device", "cpu", "--port",
           str(args.port), "--grpc-port", "-1"] + shlex.split(flags)
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(600):
            try:
                if requests.get(f"{base}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        prompt = long_text(base, args.long_tokens)
        results = []
        for _ in range(args.repeats):
            out = {}
            start = time.monotonic()
            # A fresh prefix each repeat, so the prefix cache does not serve the long prompt.
            long_prompt = f"{len(results)} {time.time()} " + prompt
            t = threading.Thread(target=stream_ttft,
                                 args=(base, long_prompt, 1, out, "long", start))
            t.start()
            time.sleep(args.delay)
            stream_ttft(base, "Hi there, how are", 8, out, "short", start)
            t.join()
            results.append(out)
            print(json.dumps({"config": label, "flags": flags, **out}), flush=True)
        return results
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sieve", default="build/sieve")
    p.add_argument("--model", default="default")
    p.add_argument("--port", type=int, default=18311)
    p.add_argument("--long-tokens", type=int, default=8000)
    p.add_argument("--delay", type=float, default=3.0, help="seconds before the short request")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--config", action="append", required=True, help="LABEL=FLAGS")
    args = p.parse_args()
    for config in args.config:
        label, _, flags = config.partition("=")
        run(args, label, flags)


if __name__ == "__main__":
    sys.exit(main())
