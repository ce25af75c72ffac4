#pragma once
// A sequence's page table (one, shared by all layers, as in vLLM) and the FlashInfer-style CSR
// arrays a step's batch passes to attention.

#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/page_pool.h"

namespace sieve::kvcache {

// Pages needed to hold `num_tokens` slots.
inline int pages_for_tokens(int num_tokens, int tokens_per_page) {
  return (num_tokens + tokens_per_page - 1) / tokens_per_page;
}

// Token slot i of the sequence lives in pages[i / tokens_per_page] at offset
// i % tokens_per_page; its arena slot is page * tokens_per_page + offset. `pages` holds exactly
// pages_for_tokens(num_tokens) entries.
struct PageTable {
  int tokens_per_page = 0;
  // Slots in use: the tokens the cache holds for the sequence (its token count until a
  // compaction packs fewer slots).
  int num_tokens = 0;
  std::vector<PageId> pages;

  int num_pages() const { return static_cast<int>(pages.size()); }
  // Arena slot of the sequence's slot `index` (0 <= index < num_pages() * tokens_per_page).
  int32_t slot(int index) const {
    return pages[index / tokens_per_page] * tokens_per_page + index % tokens_per_page;
  }
  // Slots of the last page in use (FlashInfer's last_page_len); 0 for an empty table.
  int last_page_len() const {
    return num_tokens == 0 ? 0 : num_tokens - (num_pages() - 1) * tokens_per_page;
  }
};

// One sequence of a step: its table, already grown by this step's tokens, and how many of its
// last slots are this step's new tokens.
struct BatchSeq {
  const PageTable* table = nullptr;
  int num_new_tokens = 0;
};

// The CSR page tables of a batch: sequence s owns kv_indices[kv_indptr[s] .. kv_indptr[s+1]),
// its last page holds kv_last_page_len[s] slots, kv_lens[s] slots in all; slot_mapping lists the
// arena slot of every new token, sequence by sequence (the order of the flat batch).
struct BatchPageTables {
  std::vector<int32_t> kv_indptr;
  std::vector<int32_t> kv_indices;
  std::vector<int32_t> kv_last_page_len;
  std::vector<int32_t> kv_lens;
  std::vector<int32_t> slot_mapping;
};

// Fills `out` (reusing its capacity, so steps do not allocate once warm) for `seqs`.
void build_batch_page_tables(std::span<const BatchSeq> seqs, BatchPageTables* out);

}  // namespace sieve::kvcache
