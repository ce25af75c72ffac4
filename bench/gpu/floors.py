#!/usr/bin/env python3
"""The H100's floors, measured with torch in the same device call as the benchmarks they bound:
device-to-device copy bandwidth (bytes read + written over a 4 GiB buffer) and the cuBLAS bf16
GEMM rate (8192^3). Prints one JSON line."""
import json

import torch


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    torch.manual_seed(0)
    n = 4 << 30
    a = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    copy_s = timed(lambda: b.copy_(a))
    del a, b
    x = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    y = torch.randn_like(x)
    gemm_s = timed(lambda: x @ y)
    print(json.dumps({"copy_bytes_per_s": 2 * n / copy_s, "gemm_flops_per_s": 2 * 8192**3 / gemm_s,
                      "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
