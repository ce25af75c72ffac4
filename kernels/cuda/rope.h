#pragma once
// Rotary embedding launcher (plain C++), rotate-half convention, in place on bf16 q and k.

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/kv_cache.h"
#include "kernels/cuda/rows.h"

namespace sieve::kernels::cuda {

// q: rows (token, head) of [num_tokens, num_heads, >= 2 * half]; k likewise with its own heads.
// inv_freq: f32 [half], or [num_tokens, half] rows `inv_freq_row_stride` apart (0 = shared).
// Each head vector's pair (i, i + half) rotates by position * inv_freq[i]; cos and sin are
// multiplied by attention_scaling.
void launch_rope(const StridedRows& q, const StridedRows& k, const int32_t* positions,
                 const float* inv_freq, int64_t inv_freq_row_stride, int half,
                 float attention_scaling, cudaStream_t stream);

// RoPE, then every token's K and V rows (k_rows: whole heads, of which k is the rotary part)
// written into its slot of layer `layer` in its format (slot_mapping and formats as in
// launch_write_kv), in one kernel.
void launch_rope_write_kv(const StridedRows& q, const StridedRows& k, const int32_t* positions,
                          const float* inv_freq, int64_t inv_freq_row_stride, int half,
                          float attention_scaling, const StridedRows& k_rows,
                          const StridedRows& v_rows, const int32_t* slot_mapping,
                          const KvArena& arena, const TokenFormats& formats, int layer,
                          cudaStream_t stream);

}  // namespace sieve::kernels::cuda
