"""Writes random raw blocks of each ggml format and the `gguf` package's dequantization of them.

Usage: make_quant_blocks.py OUT_DIR SEED
For each format NAME it writes OUT_DIR/NAME.raw (the block bytes) and OUT_DIR/NAME.f32 (the
reference output, little-endian float32). Bytes are random except the f16 scale fields, which
hold random finite halves (zero, subnormal and normal, both signs), so every output is finite.
"""

import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES, quants

# Byte offsets of the f16 fields in each block.
HALF_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}


def random_halves(rng: np.random.Generator, n: int) -> np.ndarray:
    scale = 10.0 ** rng.uniform(-8, 2, size=n)
    h = (rng.standard_normal(n) * scale).astype(np.float16)
    h[rng.random(n) < 0.05] = 0
    assert np.all(np.isfinite(h))
    return h


def main() -> None:
    out = Path(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    out.mkdir(parents=True, exist_ok=True)
    for qtype in [T.F32, T.F16, T.BF16, *HALF_FIELDS]:
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        num_blocks = 4096 // block_size + 64
        if qtype == T.F32:
            raw = (rng.standard_normal(num_blocks) * 10.0 ** rng.uniform(-30, 30, num_blocks))
            raw = raw.astype(np.float32).view(np.uint8)
        elif qtype == T.F16:
            raw = random_halves(rng, num_blocks).view(np.uint8)
        elif qtype == T.BF16:
            f = rng.standard_normal(num_blocks).astype(np.float32) * np.float32(1e-3)
            raw = (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        else:
            blocks = rng.integers(0, 256, size=(num_blocks, type_size), dtype=np.uint8)
            for offset in HALF_FIELDS[qtype]:
                blocks[:, offset:offset + 2] = random_halves(rng, num_blocks).view(np.uint8).reshape(-1, 2)
            raw = blocks.reshape(-1)
        ref = quants.dequantize(raw, qtype).astype(np.float32, copy=False).reshape(-1)
        assert ref.size == num_blocks * block_size
        assert np.all(np.isfinite(ref)), qtype.name
        raw.tofile(out / f"{qtype.name}.raw")
        ref.astype("<f4").tofile(out / f"{qtype.name}.f32")


if __name__ == "__main__":
    main()
