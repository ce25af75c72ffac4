#!/usr/bin/env python3
"""KVPress on `sieve eval`'s prompts: the anchor beside Sieve's quality table.

Reads the prompts `sieve eval --dump-prompts FILE` wrote (token ids, the context/question
boundary, each task's max_tokens), runs KVPress's presses on the same model (the default GGUF,
dequantized to float32 by transformers) with greedy decoding, and writes one JSON line per
(sample, setting) in the shape `sieve eval` itself writes to samples.jsonl. `sieve eval
--replay` then scores those lines with Sieve's own scoring and fidelity code and writes a
results.json, so that `sieve eval --compare` puts the two side by side:

    sieve eval --model default --tasks passkey --lengths 512 --samples 4 --dump-prompts p.jsonl
    nice bench/kvpress/.venv/bin/python bench/kvpress/run_eval.py --prompts p.jsonl \\
        --methods snapkv,knorm --keep 0.5,0.25 --out kvpress_generations.jsonl
    sieve eval --model default --tasks passkey --lengths 512 --samples 4 --methods none,snapkv,knorm \\
        --keep 0.5,0.25 --replay kvpress_generations.jsonl --out kvpress_results
    sieve eval --model default --tasks passkey --lengths 512 --samples 4 --methods none,snapkv,knorm \\
        --keep 0.5,0.25 --out sieve_results --compare kvpress_results

Protocols, as KVPress runs them (its pipeline: the press compresses the prefill it wraps, the
rest is fed uncompressed, positions continue from the uncompressed length):
- aware: the whole prompt is the press's prefill; the first token comes from that prefill's
  logits (computed before the press acts, as in Sieve), the rest is decoded on the compressed
  cache.
- agnostic: the context (token_ids[:context_tokens]) is the press's prefill; the question is fed
  afterwards on the compressed cache, then decoding.
Presses use KVPress's defaults at compression_ratio = 1 - keep (Sieve's protection of the system
prompt has no KVPress counterpart). Methods KVPress lacks (h2o, gkv, surface_logic) are skipped:
their rows are `unsupported` in the replay. Decoding stops at the model's EOS ids or max_tokens.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import default_model_path, load_model, make_presses  # noqa: E402

TOP_LOGPROBS = 20  # engine::kMaxLogprobs, what Sieve's fidelity reads


def step(model, ids, cache, first_position):
    """One forward pass of `ids` at positions first_position.. on `cache`: last-position logits."""
    positions = torch.arange(first_position, first_position + len(ids)).unsqueeze(0)
    out = model(
        input_ids=torch.tensor([ids]),
        past_key_values=cache,
        position_ids=positions,
        logits_to_keep=1,
    )
    return out.logits[0, -1].float()


def kept_tokens(model, cache, num_layers):
    """Mean KV slots a layer and KV head holds (presses that mask instead of evicting, AdaKV and
    KVzip, keep every slot in the cache and record the masked ones on the attention module)."""
    total = 0.0
    for layer in range(num_layers):
        keys = cache.layers[layer].keys
        slots = keys.shape[-2] * keys.shape[1]
        masked = getattr(model.model.layers[layer].self_attn, "masked_key_indices", None)
        if masked is not None:
            slots -= len(masked[-1])
        total += slots / keys.shape[1]
    return total / num_layers


def generate(model, tok, prompt, press, protocol, eos_ids):
    from transformers import DynamicCache

    ids = prompt["token_ids"]
    split = prompt["context_tokens"] if protocol == "agnostic" else len(ids)
    cache = DynamicCache()
    with torch.no_grad():
        if press is None:
            logits = step(model, ids[:split], cache, 0)
        else:
            with press(model):
                logits = step(model, ids[:split], cache, 0)
        if split < len(ids):
            # Layers of different lengths (PyramidKV) get no causal mask right for a multi-token
            # step in transformers' SDPA path: the question then goes in a token at a time.
            lengths = {layer.keys.shape[-2] for layer in cache.layers}
            if len(lengths) == 1:
                logits = step(model, ids[split:], cache, split)
            else:
                for i in range(split, len(ids)):
                    logits = step(model, [ids[i]], cache, i)
        config = model.config
        kept_prompt = kept_tokens(model, cache, config.num_hidden_layers)
        tokens, top = [], []
        position = len(ids)
        for i in range(prompt["max_tokens"]):
            logprobs = torch.log_softmax(logits, dim=-1)
            values, indices = torch.topk(logprobs, TOP_LOGPROBS)
            top.append([[int(t), float(v)] for t, v in zip(indices, values)])
            token = int(indices[0])
            tokens.append(token)
            if token in eos_ids or i + 1 == prompt["max_tokens"]:
                break
            logits = step(model, [token], cache, position)
            position += 1
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kept = kept_prompt + len(tokens) - 1
    kv_bytes = int(kept * config.num_hidden_layers * config.num_key_value_heads * head_dim * 2 * 4)
    text = tok.decode(tokens, skip_special_tokens=True)
    return tokens, top, text, len(ids), kept, kv_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", required=True, help="JSONL from sieve eval --dump-prompts")
    ap.add_argument("--methods", default="all", help="comma-separated, or all (KVPress's presses)")
    ap.add_argument("--keep", default="0.5,0.25,0.1", help="keep ratios, comma-separated")
    ap.add_argument("--protocol", default="both", choices=["aware", "agnostic", "both"])
    ap.add_argument("--out", required=True, help="JSONL of generations for sieve eval --replay")
    ap.add_argument("--model", default=default_model_path())
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    prompts = [json.loads(line) for line in open(args.prompts) if line.strip()]
    presses = dict(make_presses())
    presses.pop("pyramidkv_w8", None)
    methods = list(presses) if args.methods == "all" else args.methods.split(",")
    unknown = [m for m in methods if m != "none" and m not in presses]
    if unknown:
        print(f"not in KVPress (skipped, unsupported in the replay): {','.join(unknown)}")
    methods = [m for m in methods if m in presses]
    keeps = [float(k) for k in args.keep.split(",")]
    protocols = ["aware", "agnostic"] if args.protocol == "both" else [args.protocol]

    import tempfile

    with tempfile.TemporaryDirectory() as tok_dir:
        tok, model = load_model(args.model, tok_dir)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        if tok.eos_token_id is not None:
            eos_ids.add(tok.eos_token_id)
        settings = [("none", 1.0, "aware")]
        settings += [(m, k, p) for m in methods for k in keeps for p in protocols]
        tasks = sorted({p["task"] for p in prompts}, key=[p["task"] for p in prompts].index)
        with open(args.out, "w") as out:
            for task in tasks:
                mine = [p for p in prompts if p["task"] == task]
                for method, keep, protocol in settings:
                    start = time.perf_counter()
                    lines = []
                    for p in mine:
                        press = None if method == "none" else presses[method](1.0 - keep)
                        tokens, top, text, n, kept, kv_bytes = generate(
                            model, tok, p, press, protocol, eos_ids
                        )
                        lines.append(
                            {
                                "task": task,
                                "method": method,
                                "keep": keep,
                                "budget": None,
                                "protocol": protocol,
                                "length": p["length"],
                                "depth": p["depth"],
                                "index": p["index"],
                                "text": text,
                                "tokens": tokens,
                                "top_logprobs": top,
                                "prompt_tokens": n,
                                "kv_tokens_kept": round(kept),
                                "kv_bytes": kv_bytes,
                            }
                        )
                    wall = time.perf_counter() - start
                    for line in lines:
                        line["setting_wall_s"] = wall
                        out.write(json.dumps(line) + "\n")
                    out.flush()
                    print(f"{task} {method} keep {keep} {protocol}: {wall:.1f} s", flush=True)


if __name__ == "__main__":
    main()
