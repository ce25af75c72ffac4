#!/usr/bin/env python3
"""Recomputes TOVA, KeyDiff, ExpectedAttention, StreamingLLM and PyramidKV's budgets from the
written spec (numpy, no press object) and compares them with the committed fixtures.

make_fixtures.py already checks SnapKV and Knorm this way while it runs; this script extends
the check to the other single-pass presses, reading tests/fixtures/kvpress/<prompt>.json.
A difference counts only if it is not at a boundary tie. Run from the repository root:
    nice bench/kvpress/.venv/bin/python bench/kvpress/check_more_presses.py [prompt ...]
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import make_fixtures as M  # noqa: E402


def topsets(scores, k):
    return [sorted(np.argsort(-x, kind="stable")[:k].tolist()) for x in scores]


def count_real_diffs(fx, name, r, mine, scores, n):
    ref = fx["presses"][name]["decisions"][str(r)]["kept"]
    bad = tie = 0
    for l, row in enumerate(ref):
        for h, kept in enumerate(row):
            if mine[l][h] == kept:
                continue
            diff = set(mine[l][h]) ^ set(kept)
            s = scores[l][h]
            km = np.zeros(n, bool)
            km[kept] = True
            (a, b), _, _ = M.boundary_ties(s, km)
            tol = 1e-4 * max(abs(a), abs(b))
            if all(abs(s[i] - a) <= tol or abs(s[i] - b) <= tol for i in diff):
                tie += 1
            else:
                bad += 1
    return bad, tie


def pyramid_budget(n, r, w, l, n_layers, beta=20):
    mc = w + n * (1 - r)
    mn = (mc - w) / beta
    mx = (mc - w) * 2 - mn
    if mx >= n - w:
        mx = n - w
        mn = (mc - w) * 2 - mx
    if not (n >= mx >= mn >= w):
        return max(1, round(n * (1 - r)))
    return round(mx - l * (mx - mn) / (n_layers - 1))


def check_prompt(model, path):
    from transformers import DynamicCache

    fx = json.load(open(path))
    ids = fx["prompt"]["token_ids"]
    n = len(ids)
    cfg = model.config
    L, H, Hkv = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
    d, G = cfg.hidden_size // H, H // Hkv
    theta = cfg.rope_parameters["rope_theta"]
    hs_all = M.attention_inputs(model, ids)
    cache = DynamicCache()
    with torch.no_grad():
        model.model(input_ids=torch.tensor([ids]), past_key_values=cache)
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    # averaged RoPE over the 512 positions after the prompt (ExpectedAttention)
    ang = np.arange(n, n + 512)[:, None] * inv[None]
    cs, sn = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)
    P = np.zeros((d, d))
    P[d // 2 :, : d // 2], P[: d // 2, d // 2 :] = np.eye(d // 2), -np.eye(d // 2)
    R = (cs.mean(0)[:, None] * np.eye(d)) + (sn.mean(0)[:, None] * P)

    scores = {"tova": {}, "keydiff": {}, "expected_attention": {}}
    for l in range(L):
        att = model.model.layers[l].self_attn
        hs = hs_all[l]
        Wq = att.q_proj.weight.detach().double().numpy()
        K = cache.layers[l].keys[0].double().numpy()
        V = cache.layers[l].values[0].double().numpy()
        q = (hs @ Wq.T).reshape(n, H, d).transpose(1, 0, 2)  # pre-RoPE
        Kg = np.repeat(K, G, 0)
        # TOVA: last query, softmax over all keys, mean over all heads, last token forced
        qr = M.my_rope(q, theta)[:, -1]
        lg = np.einsum("hd,hnd->hn", qr, Kg) / np.sqrt(d)
        p = np.exp(lg - lg.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        t = p[:, :-1].mean(0)
        scores["tova"][l] = np.stack([np.append(t, t.max() + 1)] * Hkv)
        # KeyDiff: -cos(k, mean of normalised keys)
        a = (K / np.maximum(np.linalg.norm(K, axis=-1, keepdims=True), 1e-12)).mean(1, keepdims=True)
        scores["keydiff"][l] = -(K * a).sum(-1) / (np.linalg.norm(K, axis=-1) * np.linalg.norm(a, axis=-1))
        # ExpectedAttention: stats of pre-RoPE queries 4.., averaged RoPE, softmax, GQA mean, x||v||
        qs = q[:, 4:]
        mu = qs.mean(1)
        c = qs - mu[:, None]
        cov = np.einsum("hsi,hsj->hij", c, c) / qs.shape[1]
        mu2, cov2 = mu @ R.T, R @ cov @ R.T
        Kr = Kg[:, 4:]
        z = np.einsum("hd,hnd->hn", mu2, Kr) / np.sqrt(d) + np.einsum("hni,hij,hnj->hn", Kr, cov2, Kr) / d / 2
        pz = np.exp(z - z.max(-1, keepdims=True))
        pz /= pz.sum(-1, keepdims=True)
        e = pz.reshape(Hkv, G, -1).mean(1) * np.linalg.norm(V[:, 4:], axis=-1)
        scores["expected_attention"][l] = np.concatenate([np.full((Hkv, 4), e.max() + 1), e], 1)

    failed = False
    for r in fx["ratios"]:
        nk = max(1, int(n * (1 - r)))
        st = np.ones((Hkv, n))
        st[:, 4 : 4 + n - int(n * (1 - r))] = 0
        scores["streaming_llm"] = {l: st for l in range(L)}
        for name, sc in scores.items():
            bad, tie = count_real_diffs(fx, name, r, {l: topsets(sc[l], nk) for l in range(L)}, sc, n)
            print(f"  {name:20s} {r}: {bad} heads differ beyond ties, {tie} at ties")
            failed |= bad > 0
        for name in ("pyramidkv", "pyramidkv_w8"):
            w = fx["presses"][name]["params"]["window_size"]
            ref = [row[0] for row in fx["presses"][name]["decisions"][str(r)]["n_kept_per_layer_head"]]
            ok = ref == [pyramid_budget(n, r, w, l, L) for l in range(L)]
            print(f"  {name:20s} {r}: per-layer budgets {'match' if ok else 'DIFFER'}")
            failed |= not ok
    return failed


def main():
    torch.set_num_threads(1)
    names = sys.argv[1:] or ["chat_facts", "chat_system", "plain_text"]
    _, model = M.load_model(M.default_model_path(), tempfile.mkdtemp(prefix="kvpress_tok_"))
    failed = False
    for name in names:
        path = os.path.join(HERE, "..", "..", "tests", "fixtures", "kvpress", f"{name}.json")
        print(f"== {name}")
        failed |= check_prompt(model, path)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
