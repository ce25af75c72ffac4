#!/usr/bin/env python3
"""Hugging Face transformers `generate` on the GPU machine, as the peer for Sieve's CUDA numbers:
the same Llama-3.1-8B shape (bench/configs/llama-3.1-8b.json) with random bf16 weights, greedy,
fixed output length. Prints one JSON line per case.

    python3 bench/gpu/hf_generate.py [--cases 1x512x256,64x1024x128]
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="bench/configs/llama-3.1-8b.json")
    parser.add_argument("--cases", default="1x512x256,64x1024x128")
    args = parser.parse_args()
    config = LlamaConfig(**json.load(open(args.config)))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM._from_config(config, torch_dtype=torch.bfloat16).eval()
    for case in args.cases.split(","):
        batch, prompt_len, new_tokens = (int(x) for x in case.split("x"))
        ids = torch.randint(1000, 120000, (batch, prompt_len), device="cuda")
        kwargs = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                      pad_token_id=0)
        with torch.no_grad():
            model.generate(ids[:, :16], max_new_tokens=4, do_sample=False, pad_token_id=0)
            torch.cuda.synchronize()
            start = time.perf_counter()
            model.generate(ids, max_new_tokens=1, do_sample=False, pad_token_id=0)
            torch.cuda.synchronize()
            prefill_s = time.perf_counter() - start
            start = time.perf_counter()
            out = model.generate(ids, **kwargs)
            torch.cuda.synchronize()
            total_s = time.perf_counter() - start
        generated = (out.shape[1] - prompt_len) * batch
        print(json.dumps({"engine": "transformers", "batch": batch, "input_len": prompt_len,
                          "output_len": new_tokens, "elapsed_s": total_s,
                          "output_tokens_per_s": generated / total_s,
                          "decode_tokens_per_s": (generated - batch) / max(total_s - prefill_s, 1e-9),
                          "prefill_s": prefill_s}), flush=True)


if __name__ == "__main__":
    main()
