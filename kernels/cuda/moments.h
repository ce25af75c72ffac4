#pragma once
// ExpectedAttention's launchers (plain C++): Backend::accumulate_query_moments and
// expected_logits on the GPU.

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "kernels/cuda/kv_cache.h"

namespace sieve::kernels::cuda {

constexpr int kMaxMomentHeadDim = 256;

// q: [num_rows, num_heads, head_dim] of `dtype` (bf16 or f32), rows `row_stride` elements apart,
// heads contiguous. moments: f32 [num_heads, head_dim * (head_dim + 1)], accumulated into.
void launch_accumulate_query_moments(const void* q, DType dtype, int64_t num_rows,
                                     int64_t row_stride, int num_heads, int head_dim,
                                     float* moments, cudaStream_t stream);

// One sequence's ExpectedAttention logits (kernels/backend.h ExpectedLogitArgs), device
// pointers; the averaged rotation travels by value.
struct ExpectedLogitPointers {
  const int32_t* page_table = nullptr;
  int num_tokens = 0;
  const int32_t* head_lens = nullptr;  // null: never compacted
  int gap_end = 0;
  const float* moments = nullptr;  // [num_layers, num_heads, head_dim * (head_dim + 1)]
  int num_heads = 0;
  float inv_count = 0;
  int rotary_half = 0;
  float cos[kMaxMomentHeadDim / 2] = {};
  float sin[kMaxMomentHeadDim / 2] = {};
  bool covariance = true;
  float scale = 1.0f;
  int slot_stride = 0;
  float* out = nullptr;  // [num_layers, num_heads, slot_stride]
};
void launch_expected_logits(const KvArena& arena, const ExpectedLogitPointers& p,
                            cudaStream_t stream);

}  // namespace sieve::kernels::cuda
