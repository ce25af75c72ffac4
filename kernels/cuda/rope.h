#pragma once
// Rotary embedding launcher (plain C++), rotate-half convention, in place on bf16 q and k.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/rows.h"

namespace sieve::kernels::cuda {

// q: rows (token, head) of [num_tokens, num_heads, >= 2 * half]; k likewise with its own heads.
// inv_freq: f32 [half], or [num_tokens, half] rows `inv_freq_row_stride` apart (0 = shared).
// Each head vector's pair (i, i + half) rotates by position * inv_freq[i]; cos and sin are
// multiplied by attention_scaling.
void launch_rope(const StridedRows& q, const StridedRows& k, const int32_t* positions,
                 const float* inv_freq, int64_t inv_freq_row_stride, int half,
                 float attention_scaling, cudaStream_t stream);

}  // namespace sieve::kernels::cuda
