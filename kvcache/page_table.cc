#include "kvcache/page_table.h"

#include "core/check.h"

namespace sieve::kvcache {

void build_batch_page_tables(std::span<const BatchSeq> seqs, BatchPageTables* out) {
  out->kv_indptr.clear();
  out->kv_indices.clear();
  out->kv_last_page_len.clear();
  out->kv_lens.clear();
  out->slot_mapping.clear();
  out->kv_indptr.push_back(0);
  for (const BatchSeq& seq : seqs) {
    const PageTable& table = *seq.table;
    SIEVE_CHECK_GT(table.tokens_per_page, 0);
    SIEVE_CHECK_EQ(table.num_pages(), pages_for_tokens(table.num_tokens, table.tokens_per_page));
    SIEVE_CHECK(seq.num_new_tokens >= 0 && seq.num_new_tokens <= table.num_tokens)
        << "num_new_tokens " << seq.num_new_tokens << " of " << table.num_tokens;
    out->kv_indices.insert(out->kv_indices.end(), table.pages.begin(), table.pages.end());
    out->kv_indptr.push_back(static_cast<int32_t>(out->kv_indices.size()));
    out->kv_last_page_len.push_back(table.last_page_len());
    out->kv_lens.push_back(table.num_tokens);
    for (int i = table.num_tokens - seq.num_new_tokens; i < table.num_tokens; ++i) {
      out->slot_mapping.push_back(table.slot(i));
    }
  }
}

}  // namespace sieve::kvcache
