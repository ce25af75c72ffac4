#pragma once
// Counter-based random fill launcher (plain C++): dummy weights drawn on the device.

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace sieve::kernels::cuda {

// data[i] = mean + std·√3·(2u - 1), u = splitmix64(splitmix64(seed) ^ i) / 2^64, for i < n: the
// CPU backend's formula, rounded to `dtype` (kF32 or kBF16).
void launch_fill_random(void* data, DType dtype, int64_t n, uint64_t seed, float mean, float std,
                        cudaStream_t stream);

}  // namespace sieve::kernels::cuda
