#pragma once
// Compression-signal launchers (plain C++): Backend::kv_signals and copy_rows on the GPU.

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "kernels/cuda/kv_cache.h"

namespace sieve::kernels::cuda {

// dst[dst_rows[i]] = src[src_rows[i]] for i < n: rows of row_bytes at the given strides in bytes,
// moved in the widest units (16 bytes down to 1) that the pointers, strides and row_bytes allow.
void launch_copy_rows(void* dst, int64_t dst_stride_bytes, int64_t num_dst_rows,
                      const int32_t* dst_rows, const void* src, int64_t src_stride_bytes,
                      int64_t num_src_rows, const int32_t* src_rows, int64_t n, int row_bytes,
                      cudaStream_t stream);

// One sequence's signals (kernels/backend.h KvSignalArgs), device pointers; null outputs are
// skipped. head_lens null: the sequence was never compacted. queries: [num_layers, rows,
// num_heads, head_dim] at the given layer and row strides.
struct SignalPointers {
  const int32_t* page_table = nullptr;
  int num_tokens = 0;
  const int32_t* head_lens = nullptr;
  int gap_end = 0;
  const void* queries = nullptr;
  DType query_dtype = DType::kBF16;
  int64_t query_layer_stride = 0, query_row_stride = 0;  // in elements
  int num_queries = 0, num_heads = 0;
  float scale = 1.0f;
  int slot_stride = 0;
  float* window_attention = nullptr;
  float* window_attention_group_max = nullptr;
  float* window_attention_max = nullptr;  // max-accumulated into (KvSignalArgs)
  int skip_begin[2] = {0, 0}, skip_end[2] = {0, 0};
  float* key_norms = nullptr;
  float* value_norms = nullptr;
  float* key_anchor_dot = nullptr;
};
void launch_kv_signals(const KvArena& arena, const SignalPointers& p, cudaStream_t stream);

}  // namespace sieve::kernels::cuda
