#!/usr/bin/env python3
"""Single-thread tokenizer throughput: Sieve's tokenizer (`sieve bench tokenize`) against the
Hugging Face `tokenizers` package on the same text with the same vocabulary (the default
model's SmolLM2 vocabulary from its GGUF, built into a `tokenizers.Tokenizer` as
tests/models/tokenizer/make_references.py builds it). Both must produce the same ids (checked
by count and hash). Appends a dated section to bench/results/tokenizer_throughput.md.

    .venv/bin/python bench/tokenizer_throughput.py [--megabytes 4]
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # one thread for tokenizers
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "models", "tokenizer"))


def smollm2_tokenizer(gguf_path):
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    reader = GGUFReader(gguf_path)
    strings = lambda key: [bytes(reader.fields[key].parts[i]).decode("utf-8")
                           for i in reader.fields[key].data]
    tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
    f = reader.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)},
                               [tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, t in enumerate(types) if t == 3])
    return tok


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cache = os.environ.get("SIEVE_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sieve")
    gguf_path = os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    corpus = json.load(open(os.path.join(ROOT, "tests/models/tokenizer/fixtures/corpus.json")))
    base = "\n\n".join(corpus)
    text = (base + "\n\n") * int(args.megabytes * 1e6 / len(base.encode()) + 1)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(text)
        path = f.name
    cmd = [os.path.join(ROOT, "build", "sieve"), "--log-level", "warn", "bench", "tokenize",
           "--model", gguf_path, "--file", path, "--repeat", str(args.repeat)]
    sieve = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.splitlines()[-1])
    tok = smollm2_tokenizer(gguf_path)
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        ids = tok.encode(text, add_special_tokens=False).ids
        best = min(best, time.perf_counter() - start)
    h = 1469598103934665603
    for i in ids:
        h = ((h ^ i) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    same = str(h) == sieve["ids_fnv1a"] and len(ids) == sieve["num_tokens"]
    nbytes = len(text.encode())
    hf_mbs = nbytes / best / 1e6
    import tokenizers
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor())
    out = os.path.join(ROOT, "bench", "results", "tokenizer_throughput.md")
    new = not os.path.exists(out)
    with open(out, "a") as f:
        if new:
            f.write("# Tokenizer throughput, one thread (bench/tokenizer_throughput.py)\n")
        f.write(f"\n## {datetime.date.today()} — {cpu}, load average {os.getloadavg()[0]:.1f}\n\n")
        f.write(f"Text: the tokenizer test corpus (multilingual, emoji, code, digits) repeated to "
                f"{nbytes / 1e6:.1f} MB, encoded as one string per call; SmolLM2 vocabulary; best of "
                f"{args.repeat}.\n\n")
        f.write("| tokenizer | MB/s | tokens | same ids |\n| --- | --- | --- | --- |\n")
        f.write(f"| sieve | {sieve['mb_per_s']:.1f} | {sieve['num_tokens']} | {'yes' if same else 'NO'} |\n")
        f.write(f"| HF tokenizers {tokenizers.__version__} (RAYON_NUM_THREADS=1) | {hf_mbs:.1f} | {len(ids)} | |\n")
        f.write(f"| ratio sieve / HF | {sieve['mb_per_s'] / hf_mbs:.2f} | | |\n\n")
        f.write("Command: `.venv/bin/python bench/tokenizer_throughput.py`\n")
    print(open(out).read().split("\n## ")[-1])
    os.unlink(path)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
