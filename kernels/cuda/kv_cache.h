#pragma once
// KV cache launchers (plain C++): writes of new keys/values, page copies and compaction, on the
// paged arena of kernels/backend.h (layer-major; pages of fixed bytes, each sequence's format
// laying out its own: [K|V][kv_head][slot] element rows, then the quantized formats' scale rows,
// kvcache/README.md "Formats").

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "kernels/cuda/rows.h"

namespace sieve::kernels::cuda {

// KV formats as the kernels number them: kvcache::KvFormatId's values (cuda_backend.cc checks).
inline constexpr int kKvF32 = 0, kKvBF16 = 1, kKvFp8E4M3 = 2, kKvInt8 = 3, kKvInt4 = 4;

// The arena's geometry (KvCacheLayout's numbers) in the layout's format: its element type (kBF16,
// kF32, or kU8 for the quantized formats), its tokens per page, and the bytes of one layer's copy
// of a page, which every format shares (kv_quant.cuh's kv_geometry gives another format's).
struct KvArena {
  void* data = nullptr;
  DType dtype = DType::kBF16;
  int num_layers = 0, num_kv_heads = 0, head_dim = 0, tokens_per_page = 0, num_pages = 0;
  int format = kKvBF16;
  int64_t page_bytes = 0;

  // Elements of `dtype` in one layer's copy of a page.
  SIEVE_HOST_DEVICE int64_t layer_page_elems() const {
    return page_bytes >> (dtype == DType::kF32 ? 2 : dtype == DType::kBF16 ? 1 : 0);
  }
};

// Each token's KV format, for a batch that mixes them: the format of sequence s
// (kvcache::KvFormatId, i32 [num_seqs]) and its tokens [qo_indptr[s], qo_indptr[s + 1]).
// `formats` null: every token is of the arena's format.
struct TokenFormats {
  const int32_t* formats = nullptr;
  const int32_t* qo_indptr = nullptr;
  int num_seqs = 0;
};

// k, v: bf16 rows (token, kv_head) of [num_tokens, num_kv_heads, head_dim]. Token t goes to slot
// slot_mapping[t] of `layer` (skipped when negative), stored in its format: converted to bf16 or
// f32, or quantized (kv_quant.cuh). A token of an unquantized format must be of the arena's
// element type (bf16 tokens in a bf16 or quantized layout's arena, f32 ones in an f32 one).
void launch_write_kv(const StridedRows& k, const StridedRows& v, const int32_t* slot_mapping,
                     const KvArena& arena, const TokenFormats& formats, int layer,
                     cudaStream_t stream);

// Copies page src_pages[i] onto dst_pages[i] (every layer's page_bytes: K and V, elements and
// scales of whatever format the page holds) for i < n.
void launch_copy_pages(const KvArena& arena, const int32_t* src_pages, const int32_t* dst_pages,
                       int64_t n, cudaStream_t stream);

// Compaction of one sequence of the arena's format (its elements and, quantized, its scales).
// For each (layer, kv_head): slot j of the sequence (page_table) receives its old slot
// keep_slots[layer][kv_head][j], j < keep_counts[layer][kv_head]; rows of keep_slots ascend, so
// the moves go forward and run in place. `capacity` = pages of the sequence * tokens_per_page.
void launch_compact_kv(const KvArena& arena, const int32_t* page_table, int64_t capacity,
                       const int32_t* keep_slots, int64_t max_keep, const int32_t* keep_counts,
                       cudaStream_t stream);

}  // namespace sieve::kernels::cuda
