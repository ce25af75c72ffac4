#!/usr/bin/env python3
"""Plots `sieve eval` results: one PNG per task, score against keep ratio, one line per method
and protocol, the full cache as a dashed line. With --compare, another results.json of the same
shape (bench/kvpress/) is drawn on the same axes with hollow markers and dotted lines.

Usage: plot.py DIR [--compare OTHER_DIR_OR_FILE]   (writes DIR/<task>.png)
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    with open(path) as f:
        data = json.load(f)
    return data.get("meta", {}), [r for r in data["records"] if r.get("status", "ok") == "ok"]


def x_of(record):
    """The keep ratio; for a token budget, the kept share of the prompt."""
    if record.get("keep") is not None:
        return record["keep"]
    prompt = record.get("mean_prompt_tokens") or 0
    return record["mean_kv_tokens_kept"] / prompt if prompt else None


def draw(ax, records, task, label_prefix, style):
    full = [r for r in records if r["task"] == task and r["method"] == "none"]
    if full and full[0].get("score") is not None:
        ax.axhline(full[0]["score"], linestyle="--", color="black" if not label_prefix else "grey",
                   label=f"{label_prefix}full cache")
    lines = {}
    for r in records:
        if r["task"] != task or r["method"] == "none" or r.get("score") is None:
            continue
        x = x_of(r)
        if x is not None:
            lines.setdefault((r["method"], r["protocol"]), []).append((x, r["score"]))
    for (method, protocol), points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], style,
                label=f"{label_prefix}{method} ({protocol})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--compare")
    args = parser.parse_args()
    meta, ours = load(args.dir)
    theirs = load(args.compare)[1] if args.compare else []
    tasks = list(dict.fromkeys(r["task"] for r in ours + theirs))
    for task in tasks:
        fig, ax = plt.subplots(figsize=(6, 4))
        draw(ax, ours, task, "", "o-")
        if theirs:
            draw(ax, theirs, task, "compare: ", "s:")
        ax.set_xlabel("keep ratio")
        ax.set_ylabel("score")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{task} — {os.path.basename(meta.get('model', ''))}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        out = os.path.join(args.dir, f"{task}.png")
        fig.savefig(out, dpi=100)
        plt.close(fig)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
