#pragma once
// KV formats' element codecs on the CPU (kvcache/README.md, "Formats"): one key or value vector
// of one (token, KV head) to its elements and scales and back. The CUDA kernels
// (kernels/cuda/kv_quant.cuh) implement the same rounding and are tested against these.

#include <cstddef>
#include <cstdint>

#include "kvcache/formats.h"

namespace sieve::kernels::cpu {

// fp8 e4m3 ("fn": 4 exponent bits of bias 7, 3 mantissa bits, no infinities, ±448 the largest
// finite value): round to nearest even, saturating; NaN stays NaN.
uint8_t f32_to_fp8_e4m3(float x);
float fp8_e4m3_to_f32(uint8_t bits);

// Quantizes x[0, head_dim) to `format`: its elements to `data` (data_bytes(head_dim) bytes) and
// its scales to `meta` (meta_bytes(head_dim) bytes; unused for unquantized formats).
void quantize_vector(const kvcache::KvFormat& format, const float* x, int head_dim, std::byte* data,
                     std::byte* meta);
// The inverse: out[0, head_dim) from a vector's elements and scales.
void dequantize_vector(const kvcache::KvFormat& format, const std::byte* data,
                       const std::byte* meta, int head_dim, float* out);

}  // namespace sieve::kernels::cpu
