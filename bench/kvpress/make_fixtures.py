#!/usr/bin/env python3
"""KVPress reference decisions on the default model, for the C++ compression policies.

Loads SmolLM2-135M-Instruct from its Q4_1 GGUF through transformers' GGUF loader (which
dequantizes to float32), runs each KVPress press on the prefill of three fixed prompts at
compression ratios 0.5 / 0.75 / 0.9 with the press's default parameters, and records, per
(layer, KV head), the token indices the press kept. Writes one JSON file per prompt to
tests/fixtures/kvpress/ (schema in bench/kvpress/README.md).

Checks made on the way (the script fails if one does not hold):
- the dequantized model is sane: an independent numpy forward pass straight from the GGUF
  tensors (gguf's own dequantizer, llama.cpp's interleaved RoPE on the file's permuted Q/K)
  gives the same last-position logits as transformers;
- the kept sets of SnapKV and Knorm are recomputed by a small numpy reimplementation written
  from the spec (own RoPE, own window attention, own pooling and top-k), independent of the
  press objects, and must equal KVPress's except where the boundary scores tie.

Run from the repository root with the venv of bench/kvpress/setup.sh:
    nice bench/kvpress/.venv/bin/python bench/kvpress/make_fixtures.py
"""

import argparse
import dataclasses
import functools
import importlib.metadata as md
import json
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from prompts import prompts  # noqa: E402

RATIOS = (0.5, 0.75, 0.9)
TIE_RTOL = 1e-5
SCHEMA = "sieve-kvpress-decisions/1"


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------------------------
# Model loading and sanity
# --------------------------------------------------------------------------------------------


def default_model_path():
    cache = os.environ.get("SIEVE_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sieve"
    )
    return os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def load_model(gguf_path, tok_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, f = os.path.split(gguf_path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.eval()
    # KVzipPress reloads the tokenizer with AutoTokenizer.from_pretrained(config.name_or_path)
    # to read the chat template and encode its reconstruction prompt. The GGUF's tokenizer saved
    # to a folder comes back as another class (CodeLlamaTokenizer) that encodes "\n" and " " as
    # id 0, so KVzipPress gets the very tokenizer the prompts are encoded with instead.
    tok.save_pretrained(tok_dir)
    model.config.name_or_path = tok_dir
    import kvpress.presses.kvzip_press as kvzip_module

    class SameTokenizer:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return tok

    kvzip_module.AutoTokenizer = SameTokenizer
    return tok, model


@functools.lru_cache(maxsize=1)
def gguf_tensors(gguf_path):
    """The GGUF's hyper-parameters and its tensors dequantized by gguf's own numpy code."""
    import gguf

    r = gguf.GGUFReader(gguf_path)
    meta = {}
    for k, fld in r.fields.items():
        if k.startswith("llama.") and fld.types and fld.types[0] != gguf.GGUFValueType.ARRAY:
            meta[k] = fld.parts[fld.data[0]][0].item()
    W = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        W[t.name] = a.reshape([int(x) for x in reversed(t.shape)])
    return meta, W


def numpy_gguf_logits(gguf_path, ids):
    """Last-position logits of an independent float32 numpy forward pass over the GGUF file."""
    meta, W = gguf_tensors(gguf_path)
    n_layer = int(meta["llama.block_count"])
    n_head = int(meta["llama.attention.head_count"])
    n_kv = int(meta["llama.attention.head_count_kv"])
    eps = float(meta["llama.attention.layer_norm_rms_epsilon"])
    base = float(meta.get("llama.rope.freq_base", 10000.0))
    emb = W["token_embd.weight"]
    hd = emb.shape[1] // n_head
    n = len(ids)
    x = emb[np.asarray(ids)]

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    # llama.cpp's "normal" RoPE: adjacent pairs (2i, 2i+1), theta_i = pos * base^(-2i/d);
    # the GGUF converter permuted Q/K rows so that this equals HF's rotate_half form.
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def rope(t):  # [h, n, hd]
        a, b = t[..., 0::2], t[..., 1::2]
        out = np.empty_like(t)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    mask = np.triu(np.full((n, n), -np.inf, np.float32), 1)
    for i in range(n_layer):
        p = f"blk.{i}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = (h @ W[p + "attn_q.weight"].T).reshape(n, n_head, hd).transpose(1, 0, 2)
        k = (h @ W[p + "attn_k.weight"].T).reshape(n, n_kv, hd).transpose(1, 0, 2)
        v = (h @ W[p + "attn_v.weight"].T).reshape(n, n_kv, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        g = n_head // n_kv
        k, v = np.repeat(k, g, 0), np.repeat(v, g, 0)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(n, n_head * hd)
        x = x + o @ W[p + "attn_output.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        gt = h @ W[p + "ffn_gate.weight"].T
        up = h @ W[p + "ffn_up.weight"].T
        x = x + ((gt / (1 + np.exp(-gt))) * up) @ W[p + "ffn_down.weight"].T
    x = rms(x[-1:], W["output_norm.weight"])
    out = W.get("output.weight", emb)
    return (x @ out.T)[0]


# --------------------------------------------------------------------------------------------
# Capturing the presses' decisions
# --------------------------------------------------------------------------------------------


def press_params(press):
    from kvpress import AdaKVPress

    if isinstance(press, AdaKVPress):
        return {
            "alpha_safeguard": press.alpha_safeguard,
            "scorer": type(press.press).__name__,
            "scorer_params": press_params(press.press),
        }
    return {
        f.name: getattr(press, f.name)
        for f in dataclasses.fields(press)
        if f.name != "compression_ratio" and not f.name.startswith("_")
    }


def rows_to_indices(orig, kept):
    """orig [n, d], kept [m, d] (rows gathered from orig): the index of each kept row."""
    lut = {}
    for i, row in enumerate(orig):
        key = row.tobytes()
        assert key not in lut, "two identical key rows: cannot recover indices"
        lut[key] = i
    return sorted(lut[row.tobytes()] for row in kept)


def boundary_ties(scores, kept_mask):
    """scores, kept_mask: 1-D. Returns ([s_k, s_k1], near-tie pairs, exact-tie pairs).

    s_k = the lowest kept score, s_k1 = the highest evicted score; a near tie is a
    (kept, evicted) pair whose scores are within TIE_RTOL relative of each other."""
    s = np.asarray(scores, dtype=np.float64)
    kept = np.sort(s[kept_mask])
    ev = np.sort(s[~kept_mask])
    if len(kept) == 0 or len(ev) == 0:
        return [float(kept[0]) if len(kept) else None, float(ev[-1]) if len(ev) else None], 0, 0
    sk, sk1 = float(kept[0]), float(ev[-1])
    out = [float(f"{sk:.7g}"), float(f"{sk1:.7g}")]
    tol = TIE_RTOL * max(abs(sk), abs(sk1))
    near = exact = 0
    for v in kept[kept <= sk1 + tol]:
        near += len(ev) - np.searchsorted(ev, v - tol, side="left")
        exact += int((ev == v).sum())
    return out, int(near), int(exact)


class Recorder:
    """Wraps a press so that one prefill reports what it kept, and the scores it ranked."""

    def __init__(self, press):
        self.press = press
        self.scores = {}  # layer -> tensor [Hkv, n] (the tensor the press ranked)
        self.kept = {}  # layer -> list per KV head of sorted indices
        self.n_tokens = None
        self.kvzip_input = None  # (prefix_length, [repeat ids of each chunk]) KVzipPress used

    def install(self):
        from kvpress import AdaKVPress, KVzipPress

        p = self.press
        if isinstance(p, KVzipPress):
            orig_prepare = p.prepare

            def prepare(model, tokenizer, *args, **kwargs):
                pairs = orig_prepare(model, tokenizer, *args, **kwargs)
                self.kvzip_input = (p.prefix_length, [r[0].tolist() for _, r in pairs])
                return pairs

            p.prepare = prepare
            orig_post = p.compress_post

            def compress_post(model):
                orig_post(model)
                sv = p.score_val  # after the call: sinks set to amax + 1, as ranked
                self.scores = {i: sv[i][0].detach().clone() for i in range(sv.shape[0])}

            p.compress_post = compress_post
            return
        scorer = p.press if isinstance(p, AdaKVPress) else p
        orig_score = scorer.score

        def score(module, hidden_states, keys, values, attentions, kwargs):
            s = orig_score(module, hidden_states, keys, values, attentions, kwargs)
            # AdaKV then writes its safeguard into this tensor in place: keep the reference,
            # so that what is recorded is what the final top-k saw.
            self.scores[module.layer_idx] = s[0]
            return s

        scorer.score = score
        if isinstance(p, AdaKVPress):
            return
        orig_compress = p.compress

        def compress(module, hidden_states, keys, values, attentions, kwargs):
            k2, v2 = orig_compress(module, hidden_states, keys, values, attentions, kwargs)
            ko, kc = keys[0].detach().numpy(), k2[0].detach().numpy()
            self.kept[module.layer_idx] = [rows_to_indices(ko[h], kc[h]) for h in range(ko.shape[0])]
            return k2, v2

        p.compress = compress

    def collect_masked(self, model, n):
        """AdaKV / KVzip mask instead of dropping: kept = complement of masked_key_indices."""
        for layer in model.model.layers:
            m = layer.self_attn
            b, hs, ss = m.masked_key_indices
            hkv = model.config.num_key_value_heads
            mask = np.ones((hkv, n), dtype=bool)
            mask[hs.numpy(), ss.numpy()] = False
            self.kept[m.layer_idx] = [np.nonzero(mask[h])[0].tolist() for h in range(hkv)]
            m.masked_key_indices = None


def run_press(model, ids, press):
    from kvpress import AdaKVPress, KVzipPress
    from transformers import DynamicCache

    rec = Recorder(press)
    rec.install()
    x = torch.tensor([ids])
    with torch.no_grad():
        cache = DynamicCache()
        with press(model):
            model.model(input_ids=x, past_key_values=cache)
        if isinstance(press, (AdaKVPress, KVzipPress)):
            rec.collect_masked(model, len(ids))
        else:
            for i, layer in enumerate(cache.layers):
                assert layer.keys.shape[2] == len(rec.kept[i][0])
    return rec


def decision_record(rec, press, n, n_layers, hkv):
    """kept lists, and boundary scores / ties at the granularity the press decides at."""
    from kvpress import AdaKVPress, KVzipPress

    kept = [rec.kept[l] for l in range(n_layers)]
    out = {"kept": kept}
    scores = [rec.scores[l].detach().double().numpy() for l in range(n_layers)]
    masks = []
    for l in range(n_layers):
        m = np.zeros((hkv, n), dtype=bool)
        for h in range(hkv):
            m[h, kept[l][h]] = True
        masks.append(m)
    near = exact = 0
    ties = []
    if isinstance(press, KVzipPress):
        # one global top-k over (layer, head, token)
        b, nr, ex = boundary_ties(np.stack(scores).ravel(), np.stack(masks).ravel())
        out["boundary"] = b
        near, exact = nr, ex
        if nr:
            ties.append([-1, -1, nr])
    elif isinstance(press, AdaKVPress):
        # one top-k per layer over (head, token)
        bl = []
        for l in range(n_layers):
            b, nr, ex = boundary_ties(scores[l].ravel(), masks[l].ravel())
            bl.append(b)
            near, exact = near + nr, exact + ex
            if nr:
                ties.append([l, -1, nr])
        out["boundary"] = bl
    else:
        bl = []
        for l in range(n_layers):
            row = []
            for h in range(hkv):
                b, nr, ex = boundary_ties(scores[l][h], masks[l][h])
                row.append(b)
                near, exact = near + nr, exact + ex
                if nr:
                    ties.append([l, h, nr])
            bl.append(row)
        out["boundary"] = bl
    out["near_ties"] = near
    out["exact_ties"] = exact
    out["tied"] = ties
    return out


# --------------------------------------------------------------------------------------------
# Independent reimplementation of SnapKV and Knorm (validates the spec)
# --------------------------------------------------------------------------------------------


def attention_inputs(model, ids):
    """The input of every attention layer (after input RMSNorm), from a plain prefill."""
    got = {}
    hooks = []
    for layer in model.model.layers:

        def hook(mod, args, kwargs, li=layer.self_attn.layer_idx):
            got[li] = kwargs["hidden_states"][0].detach().double().numpy()

        hooks.append(layer.self_attn.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model.model(input_ids=torch.tensor([ids]))
    finally:
        for h in hooks:
            h.remove()
    return got


def my_rope(x, theta):  # x [h, n, d], HF's rotate_half convention (pairs i, i + d/2)
    n, d = x.shape[1], x.shape[2]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)
    sin = np.concatenate([np.sin(ang)] * 2, -1)
    rot = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def my_topk_sets(scores, n_kept):  # scores [Hkv, n] -> list of sorted kept sets
    return [sorted(np.argsort(-s, kind="stable")[:n_kept].tolist()) for s in scores]


@functools.lru_cache(maxsize=2)
def my_scores(model, ids, window=64, kernel=5):
    """Per layer: (SnapKV scores [Hkv, n], Knorm scores [Hkv, n]) from our own numpy code."""
    return _my_scores(model, attention_inputs(model, list(ids)), window, kernel)


def my_snapkv_knorm(model, ids, ratio):
    """Kept sets and scores of our SnapKV and Knorm reimplementations at one ratio."""
    n = len(ids)
    n_kept = max(1, int(n * (1 - ratio)))
    snap, knorm = {}, {}
    for l, (s_snap, s_knorm) in my_scores(model, tuple(ids)).items():
        snap[l] = (my_topk_sets(s_snap, n_kept), s_snap)
        knorm[l] = (my_topk_sets(s_knorm, n_kept), s_knorm)
    return snap, knorm


def _my_scores(model, hs_by_layer, window, kernel):
    cfg = model.config
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    d = cfg.hidden_size // H
    G = H // Hkv
    theta = cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta
    out = {}
    for l, hs in hs_by_layer.items():
        att = model.model.layers[l].self_attn
        n = hs.shape[0]
        Wq = att.q_proj.weight.detach().double().numpy()
        Wk = att.k_proj.weight.detach().double().numpy()
        q = my_rope((hs @ Wq.T).reshape(n, H, d).transpose(1, 0, 2), theta)
        k = my_rope((hs @ Wk.T).reshape(n, Hkv, d).transpose(1, 0, 2), theta)
        # Knorm: score = -||k|| (post-RoPE key, i.e. the cached key)
        s_knorm = -np.linalg.norm(k, axis=-1)
        # SnapKV: last `window` queries, causal inside the window, softmax over all keys
        qw = q[:, n - window :]
        kk = np.repeat(k, G, 0)
        s = qw @ kk.transpose(0, 2, 1) / math.sqrt(d)
        for i in range(window):  # query i sits at position n - window + i
            s[:, i, n - window + i + 1 :] = -np.inf
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = s[:, :, : n - window].mean(1)  # [H, n - window]
        pad = kernel // 2
        ap = np.pad(a, ((0, 0), (pad, pad)))
        pooled = sum(ap[:, j : j + n - window] for j in range(kernel)) / kernel
        per_kv = pooled.reshape(Hkv, G, n - window).mean(1)
        full = np.concatenate([per_kv, np.full((Hkv, window), per_kv.max() + 1)], 1)
        out[l] = (full, s_knorm)
    return out


def compare_sets(name, mine, theirs, scores_ref):
    """Equal, or differing only at boundary near-ties of the reference scores."""
    real, tie = 0, 0
    for l in mine:
        for h, (a, b) in enumerate(zip(mine[l][0], theirs[l])):
            if a == b:
                continue
            diff = set(a) ^ set(b)
            s = scores_ref[l][h]
            kept_mask = np.zeros(len(s), bool)
            kept_mask[b] = True
            (sk, sk1), _, _ = boundary_ties(s, kept_mask)
            tol = 1e-4 * max(abs(sk), abs(sk1))
            if all(abs(s[i] - sk) <= tol or abs(s[i] - sk1) <= tol for i in diff):
                tie += 1
            else:
                real += 1
                log(f"  {name}: layer {l} head {h} differs beyond ties: {sorted(diff)[:10]}")
    return real, tie


# --------------------------------------------------------------------------------------------


def make_presses():
    import kvpress as K

    out = [
        ("snapkv", lambda r: K.SnapKVPress(compression_ratio=r)),
        ("tova", lambda r: K.TOVAPress(compression_ratio=r)),
        ("knorm", lambda r: K.KnormPress(compression_ratio=r)),
        ("keydiff", lambda r: K.KeyDiffPress(compression_ratio=r)),
        ("expected_attention", lambda r: K.ExpectedAttentionPress(compression_ratio=r)),
        ("streaming_llm", lambda r: K.StreamingLLMPress(compression_ratio=r)),
        ("pyramidkv", lambda r: K.PyramidKVPress(compression_ratio=r)),
        # Not a default: at window_size 64 PyramidKV's pyramid engages only for ratio <= 0.5 or
        # n * (1 - ratio) >= 20 * 64 (else: SnapKV with round() budgets). window_size 8 adds the
        # budget formula's other branch (plain_text at 0.75).
        ("pyramidkv_w8", lambda r: K.PyramidKVPress(compression_ratio=r, window_size=8)),
        ("adakv", lambda r: K.AdaKVPress(K.SnapKVPress(compression_ratio=r))),
    ]
    if hasattr(K, "KVzipPress"):
        out.append(("kvzip", lambda r: K.KVzipPress(compression_ratio=r)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=default_model_path())
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "fixtures", "kvpress"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated prompt names")
    ap.add_argument("--presses", default="", help="comma-separated press names")
    ap.add_argument("--no-numpy-check", action="store_true")
    ap.add_argument("--count-only", action="store_true", help="print the prompts' token counts")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other presses of the existing fixture files")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import kvpress  # noqa: F401  (patches the attention functions on import)

    t0 = time.time()
    tok_dir = tempfile.mkdtemp(prefix="kvpress_tok_")
    tok, model = load_model(args.model, tok_dir)
    cfg = model.config
    n_layers, H, Hkv = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
    log(f"loaded {args.model} in {time.time() - t0:.1f}s: {n_layers} layers, {H}/{Hkv} heads")
    versions = {p: md.version(p) for p in ("kvpress", "torch", "transformers", "gguf", "numpy")}
    versions["python"] = sys.version.split()[0]
    log("versions:", versions)

    presses = make_presses()
    if args.presses:
        want = set(args.presses.split(","))
        presses = [p for p in presses if p[0] in want]
    os.makedirs(args.out, exist_ok=True)
    totals = {}

    for name, kind, payload in prompts():
        if args.only and name not in args.only.split(","):
            continue
        if kind == "chat":
            text = tok.apply_chat_template(payload, add_generation_prompt=True, tokenize=False)
        else:
            text = payload
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text, "tokenizer round trip"
        n = len(ids)
        if args.count_only:
            log(f"{name}: {n} tokens")
            continue
        log(f"\n== {name}: {n} tokens")

        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        top = torch.topk(logits, 10)
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
        greedy = gen[0, n:].tolist()
        log("  greedy continuation:", repr(tok.decode(greedy)))
        assert torch.isfinite(logits).all()
        if not args.no_numpy_check:
            ref = numpy_gguf_logits(args.model, ids)
            diff = float(np.abs(ref - logits.numpy()).max())
            log(f"  numpy-from-GGUF vs transformers logits: max |diff| {diff:.2e} "
                f"(logit range {float(logits.min()):.1f}..{float(logits.max()):.1f}); "
                f"top-1 {int(np.argmax(ref))} vs {int(top.indices[0])}")
            assert diff < 1e-2 and int(np.argmax(ref)) == int(top.indices[0]), "dequantized model disagrees"

        fixture = {
            "schema": SCHEMA,
            "prompt": {
                "name": name,
                "kind": kind,
                "messages" if kind == "chat" else "text": payload,
                "token_ids": ids,
                "n_tokens": n,
            },
            "model": {
                "gguf": os.path.basename(args.model),
                "loader": "transformers from_pretrained(gguf_file=...), dequantized to float32",
                "attn_implementation": "sdpa",
                "n_layers": n_layers,
                "n_heads": H,
                "n_kv_heads": Hkv,
                "head_dim": cfg.hidden_size // H,
            },
            "versions": versions,
            "reference_logits": {
                "position": n - 1,
                "top10_ids": top.indices.tolist(),
                "top10_values": [round(v, 5) for v in top.values.tolist()],
                "greedy_24": greedy,
            },
            "ratios": list(RATIOS),
            "tie_rtol": TIE_RTOL,
            "presses": {},
        }

        for pname, make in presses:
            entry = None
            for r in RATIOS:
                press = make(r)
                if entry is None:
                    entry = {"class": type(press).__name__, "params": press_params(press), "decisions": {}}
                ts = time.time()
                rec = run_press(model, ids, press)
                if rec.kvzip_input is not None:
                    # What KVzipPress reconstructed from must be what the fixture records.
                    prefix, chunks = rec.kvzip_input
                    assert prefix == kvzip_prefix(tok), (prefix, kvzip_prefix(tok))
                    assert chunks == [kvzip_repeat_ids(tok, ids)], "KVzip's repeat ids differ"
                dec = decision_record(rec, press, n, n_layers, Hkv)
                dec["n_kept_per_layer_head"] = [[len(x) for x in row] for row in dec["kept"]]
                entry["decisions"][str(r)] = dec
                totals[(pname, r)] = totals.get((pname, r), 0) + dec["near_ties"]
                log(f"  {pname:20s} ratio {r}: kept/head {sorted(set(sum(dec['n_kept_per_layer_head'], [])))[:6]}"
                    f" near-ties {dec['near_ties']} exact {dec['exact_ties']} ({time.time() - ts:.1f}s)")
                if pname in ("snapkv", "knorm"):
                    snap, kn = my_snapkv_knorm(model, tuple(ids), r)
                    mine = snap if pname == "snapkv" else kn
                    ref_scores = {l: rec.scores[l].double().numpy() for l in range(n_layers)}
                    real, tie = compare_sets(pname, mine, rec.kept, ref_scores)
                    # scores themselves: same formula, so they agree to float32 precision
                    sdiff = max(
                        float(np.abs(mine[l][1] - ref_scores[l]).max() / (np.abs(ref_scores[l]).max() + 1e-30))
                        for l in range(n_layers)
                    )
                    log(f"    self-check {pname}: {real} heads differ beyond ties, {tie} differ at ties;"
                        f" max relative score diff {sdiff:.1e}")
                    assert real == 0, f"self-check of {pname} failed"
                    dec["self_check"] = {"heads_equal_up_to_ties": True, "heads_differing_at_ties": tie}
            fixture["presses"][pname] = entry

        if "kvzip" in fixture["presses"]:
            fixture["presses"]["kvzip"]["prefix_length"] = kvzip_prefix(tok)
            fixture["presses"]["kvzip"]["repeat_ids"] = kvzip_repeat_ids(tok, ids)
        path = os.path.join(args.out, f"{name}.json")
        if args.merge and os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            assert old["prompt"]["token_ids"] == ids, "the prompt changed: regenerate everything"
            old["presses"].update(fixture["presses"])
            old["versions"] = fixture["versions"]
            fixture = old
        with open(path, "w") as f:
            json.dump(fixture, f, separators=(",", ":"))
            f.write("\n")
        log(f"  wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)")

    log(f"\ndone in {time.time() - t0:.0f}s; near-tie totals per (press, ratio):")
    for k, v in sorted(totals.items()):
        log(f"  {k[0]:20s} {k[1]}: {v}")


def kvzip_prefix(tok):
    """KVzipPress.__call__'s prefix length: the chat template's text before a user message."""
    dummy = "dummy context"
    sep = "\n" + "#" * len(dummy)
    t = tok.apply_chat_template([{"role": "user", "content": dummy + sep}], add_generation_prompt=True, tokenize=False)
    ctx, _ = t.split(sep)
    return len(tok.encode(ctx.split(dummy)[0], add_special_tokens=False))


def kvzip_repeat_ids(tok, ids):
    """The token ids of KVzip's reconstruction pass (one chunk: the prompts are < 2048)."""
    dummy = "dummy context"
    sep = "\n" + "#" * len(dummy)
    t = tok.apply_chat_template([{"role": "user", "content": dummy + sep}], add_generation_prompt=True, tokenize=False)
    _, suffix = t.split(sep)
    p = kvzip_prefix(tok)
    q = tok.encode("\n\nRepeat the previous context exactly.", add_special_tokens=False)
    return q + tok.encode(suffix, add_special_tokens=False) + list(ids[p:])


if __name__ == "__main__":
    main()
