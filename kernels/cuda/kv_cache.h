#pragma once
// KV cache launchers (plain C++): writes of new keys/values, page copies and compaction, on the
// paged arena of kernels/backend.h (layer-major; a page is [K|V][kv_head][slot][head_dim]).

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "kernels/cuda/rows.h"

namespace sieve::kernels::cuda {

// The arena's geometry (KvCacheLayout's numbers) and element type (kBF16 or kF32).
struct KvArena {
  void* data = nullptr;
  DType dtype = DType::kBF16;
  int num_layers = 0, num_kv_heads = 0, head_dim = 0, tokens_per_page = 0, num_pages = 0;

  SIEVE_HOST_DEVICE int64_t layer_page_elems() const {
    return 2ll * num_kv_heads * tokens_per_page * head_dim;
  }
};

// k, v: bf16 rows (token, kv_head) of [num_tokens, num_kv_heads, head_dim]. Token t goes to slot
// slot_mapping[t] of `layer` (skipped when negative), converted to the arena's dtype.
void launch_write_kv(const StridedRows& k, const StridedRows& v, const int32_t* slot_mapping,
                     const KvArena& arena, int layer, cudaStream_t stream);

// Copies page src_pages[i] onto dst_pages[i] (every layer, K and V) for i < n.
void launch_copy_pages(const KvArena& arena, const int32_t* src_pages, const int32_t* dst_pages,
                       int64_t n, cudaStream_t stream);

// For each (layer, kv_head): slot j of the sequence (page_table) receives its old slot
// keep_slots[layer][kv_head][j], j < keep_counts[layer][kv_head]; rows of keep_slots ascend, so
// the moves go forward and run in place. `capacity` = pages of the sequence * tokens_per_page.
void launch_compact_kv(const KvArena& arena, const int32_t* page_table, int64_t capacity,
                       const int32_t* keep_slots, int64_t max_keep, const int32_t* keep_counts,
                       cudaStream_t stream);

}  // namespace sieve::kernels::cuda
