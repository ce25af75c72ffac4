#pragma once
// Where a sequence's token slots live in the paged KV arena (kernels/backend.h KvCacheLayout),
// for the CPU ops that read or move them: attention, compaction, compression signals.

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace sieve::kernels::cpu {

// Byte offset of (layer, K or V, kv_head, slot) in the arena, for a sequence's page table.
inline size_t slot_offset(const KvCacheLayout& layout, const int32_t* pages, int layer, int kv,
                          int kv_head, int64_t slot) {
  const int tpp = layout.tokens_per_page;
  return (static_cast<size_t>(layer) * layout.num_pages + pages[slot / tpp]) *
             layout.layer_page_bytes() +
         ((static_cast<size_t>(kv) * layout.num_kv_heads + kv_head) * tpp + slot % tpp) *
             layout.head_dim * dtype_size(layout.dtype);
}

}  // namespace sieve::kernels::cpu
