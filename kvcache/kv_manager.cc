#include "kvcache/kv_manager.h"

#include <algorithm>
#include <limits>

#include "core/check.h"

namespace sieve::kvcache {

StatusOr<std::unique_ptr<KvManager>> KvManager::create(const KvManagerConfig& config) {
  if (config.num_pages <= 0) {
    return InvalidArgumentError("num_pages must be positive, got " +
                                std::to_string(config.num_pages));
  }
  const KvGeometry& g = config.geometry;
  if (g.num_layers <= 0 || g.num_kv_heads <= 0 || g.head_dim <= 0) {
    return InvalidArgumentError(
        "KV geometry must be positive, got num_layers=" + std::to_string(g.num_layers) +
        " num_kv_heads=" + std::to_string(g.num_kv_heads) +
        " head_dim=" + std::to_string(g.head_dim));
  }
  int max_tokens_per_page = 0;
  for (const KvFormat& format : kKvFormats) {
    max_tokens_per_page =
        std::max(max_tokens_per_page, kvcache::tokens_per_page(config.page_bytes, format.id, g));
  }
  if (max_tokens_per_page == 0) {
    return InvalidArgumentError("page_bytes " + std::to_string(config.page_bytes) +
                                " holds no token in any KV format");
  }
  // Arena slots are i32 (slot_mapping).
  if (static_cast<int64_t>(config.num_pages) * max_tokens_per_page >
      std::numeric_limits<int32_t>::max()) {
    return InvalidArgumentError("num_pages " + std::to_string(config.num_pages) + " x " +
                                std::to_string(max_tokens_per_page) +
                                " tokens per page overflows 32-bit slot indices");
  }
  return std::unique_ptr<KvManager>(new KvManager(config));
}

KvManager::KvManager(const KvManagerConfig& config)
    : config_(config), pool_(config.num_pages), prefix_(pool_, config.enable_prefix_caching) {
  for (const KvFormat& format : kKvFormats) {
    namespace_hashes_.push_back(PrefixCache::namespace_hash(config.model_id, format.name));
  }
}

StatusOr<int> KvManager::tokens_per_page(KvFormatId format) const {
  const int tokens = kvcache::tokens_per_page(config_.page_bytes, format, config_.geometry);
  if (tokens == 0) {
    const KvFormat& f = kv_format(format);
    return InvalidArgumentError("kv_format " + std::string(f.name) + " needs " +
                                std::to_string(f.bytes_per_token(config_.geometry)) +
                                " bytes per token, more than a page (" +
                                std::to_string(config_.page_bytes) + " bytes)");
  }
  return tokens;
}

KvCacheUsage KvManager::usage() const {
  return KvCacheUsage{pool_.num_pages(), pool_.num_used(), pool_.num_cached(), pool_.num_free()};
}

KvManager::SeqState& KvManager::state(SeqId seq) {
  const auto it = seqs_.find(seq);
  SIEVE_CHECK(it != seqs_.end()) << "unknown sequence " << seq;
  return it->second;
}

const KvManager::SeqState& KvManager::state(SeqId seq) const {
  const auto it = seqs_.find(seq);
  SIEVE_CHECK(it != seqs_.end()) << "unknown sequence " << seq;
  return it->second;
}

void KvManager::add_sequence(SeqId seq, KvFormatId format) {
  const StatusOr<int> tokens = tokens_per_page(format);
  SIEVE_CHECK(tokens.ok()) << tokens.status().message();
  SeqState s;
  s.format = format;
  s.table.tokens_per_page = *tokens;
  const bool inserted = seqs_.emplace(seq, std::move(s)).second;
  SIEVE_CHECK(inserted) << "sequence " << seq << " added twice";
  released_.erase(seq);
}

int KvManager::attach_cached_prefix(SeqId seq, std::span<const int32_t> token_ids) {
  SeqState& s = state(seq);
  SIEVE_CHECK_EQ(s.table.num_pages(), 0) << "sequence " << seq << " already holds pages";
  if (!prefix_.enabled() || token_ids.empty()) return 0;
  const int tpp = s.table.tokens_per_page;
  const int max_pages = static_cast<int>(token_ids.size() - 1) / tpp;
  PageHash prev = namespace_hashes_[static_cast<size_t>(s.format)];
  for (int i = 0; i < max_pages; ++i) {
    const PageHash hash =
        PrefixCache::chain_hash(prev, token_ids.subspan(static_cast<size_t>(i) * tpp, tpp));
    const std::optional<PageId> page = prefix_.find(hash);
    if (!page.has_value()) break;
    pool_.add_ref(*page);
    s.table.pages.push_back(*page);
    s.page_hashes.push_back(hash);
    prev = hash;
  }
  s.table.num_tokens = s.table.num_pages() * tpp;
  s.pending_lookup.emplace(static_cast<int>(token_ids.size()), s.table.num_tokens);
  return s.table.num_tokens;
}

int KvManager::num_pages_needed(SeqId seq, int num_new_tokens) const {
  SIEVE_CHECK_GE(num_new_tokens, 0);
  if (num_new_tokens == 0) return 0;
  const PageTable& table = state(seq).table;
  const int grow = pages_for_tokens(table.num_tokens + num_new_tokens, table.tokens_per_page) -
                   table.num_pages();
  const bool last_partial = table.num_tokens % table.tokens_per_page != 0;
  const bool copy_last = last_partial && pool_.ref_count(table.pages.back()) > 1;
  return grow + (copy_last ? 1 : 0);
}

std::optional<SlotAllocation> KvManager::allocate_slots(SeqId seq,
                                                        std::span<const int32_t> token_ids,
                                                        int num_new_tokens) {
  if (num_pages_needed(seq, num_new_tokens) > num_available_pages()) return std::nullopt;
  SeqState& s = state(seq);
  PageTable& table = s.table;
  SlotAllocation out;
  // Only a partial last page is ever written again; full pages are never written.
  if (num_new_tokens > 0 && table.num_tokens % table.tokens_per_page != 0 &&
      pool_.ref_count(table.pages.back()) > 1) {
    copy_on_write(s, table.num_pages() - 1, &out.copies);
  }
  const int num_pages = pages_for_tokens(table.num_tokens + num_new_tokens, table.tokens_per_page);
  while (table.num_pages() < num_pages) {
    table.pages.push_back(take_page());
    out.new_pages.push_back(table.pages.back());
  }
  table.num_tokens += num_new_tokens;
  publish_full_pages(s, token_ids);
  if (s.pending_lookup.has_value()) {
    prefix_.record_lookup(s.pending_lookup->first, s.pending_lookup->second);
    s.pending_lookup.reset();
  }
  return out;
}

void KvManager::free(SeqId seq) {
  SeqState& s = state(seq);
  released_[seq] = ReleasedSeq{num_kept_tokens(seq), s.table.num_pages()};
  // Last page first: the LRU then reclaims a prefix's tail before its head, which more
  // sequences share.
  for (int i = s.table.num_pages() - 1; i >= 0; --i) pool_.release(s.table.pages[i]);
  seqs_.erase(seq);
}

void KvManager::fork(SeqId parent, SeqId child) {
  SIEVE_CHECK(!seqs_.contains(child)) << "sequence " << child << " exists";
  SeqState copy = state(parent);
  copy.pending_lookup.reset();
  for (PageId page : copy.table.pages) pool_.add_ref(page);
  seqs_.emplace(child, std::move(copy));
}

StatusOr<CompactionResult> KvManager::compact(SeqId seq, std::span<const int32_t> new_head_lens) {
  SeqState& s = state(seq);
  PageTable& table = s.table;
  const KvGeometry& g = config_.geometry;
  SIEVE_CHECK_EQ(new_head_lens.size(), static_cast<size_t>(g.num_layers) * g.num_kv_heads);
  int new_num_tokens = 0;
  for (int layer = 0; layer < g.num_layers; ++layer) {
    for (int head = 0; head < g.num_kv_heads; ++head) {
      const int len = new_head_lens[layer * g.num_kv_heads + head];
      const int valid = head_valid_len(seq, layer, head);
      SIEVE_CHECK(len >= 0 && len <= valid)
          << "layer " << layer << " head " << head << " keeps " << len << " of " << valid;
      new_num_tokens = std::max(new_num_tokens, len);
    }
  }
  // The compactor rewrites the pages that will hold the survivors: make them private first.
  const int num_kept_pages = pages_for_tokens(new_num_tokens, table.tokens_per_page);
  int num_copies = 0;
  for (int i = 0; i < num_kept_pages; ++i) num_copies += pool_.ref_count(table.pages[i]) > 1;
  if (num_copies > num_available_pages()) {
    return ResourceExhaustedError("compaction needs " + std::to_string(num_copies) +
                                  " pages for copy-on-write, " +
                                  std::to_string(num_available_pages()) + " are available");
  }
  CompactionResult result;
  for (int i = 0; i < num_kept_pages; ++i) {
    if (pool_.ref_count(table.pages[i]) > 1) {
      copy_on_write(s, i, &result.copies);
    } else {
      prefix_.erase_page(table.pages[i]);
    }
  }
  // Released only after the copies took their pages, so no copy lands on a source page.
  result.source_pages = table.pages;
  for (int i = table.num_pages() - 1; i >= num_kept_pages; --i) {
    result.released_pages.push_back(table.pages[i]);
    pool_.release(table.pages[i]);
  }
  table.pages.resize(num_kept_pages);
  table.num_tokens = new_num_tokens;
  s.head_prefix_lens.assign(new_head_lens.begin(), new_head_lens.end());
  s.gap_end = new_num_tokens;
  s.compacted = true;
  s.page_hashes.clear();
  return result;
}

const PageTable& KvManager::page_table(SeqId seq) const { return state(seq).table; }

KvFormatId KvManager::format(SeqId seq) const { return state(seq).format; }

HeadLengths KvManager::head_lengths(SeqId seq) const {
  const SeqState& s = state(seq);
  return HeadLengths{s.head_prefix_lens, s.compacted ? s.gap_end : s.table.num_tokens};
}

int KvManager::head_valid_len(SeqId seq, int layer, int kv_head) const {
  const SeqState& s = state(seq);
  if (!s.compacted) return s.table.num_tokens;
  const int index = layer * config_.geometry.num_kv_heads + kv_head;
  return s.head_prefix_lens.at(index) + s.table.num_tokens - s.gap_end;
}

int KvManager::num_kept_tokens(SeqId seq) const {
  const SeqState& s = state(seq);
  if (!s.compacted) return s.table.num_tokens;
  const KvGeometry& g = config_.geometry;
  int64_t num_slots = 0;
  for (int layer = 0; layer < g.num_layers; ++layer) {
    for (int head = 0; head < g.num_kv_heads; ++head) num_slots += head_valid_len(seq, layer, head);
  }
  const int64_t num_heads = int64_t{g.num_layers} * g.num_kv_heads;
  return static_cast<int>((num_slots + num_heads / 2) / num_heads);
}

std::optional<ReleasedSeq> KvManager::take_released(SeqId seq) {
  const auto it = released_.find(seq);
  if (it == released_.end()) return std::nullopt;
  const ReleasedSeq released = it->second;
  released_.erase(it);
  return released;
}

std::optional<std::vector<PageId>> KvManager::borrow_pages(int n) {
  if (n < 0 || n > pool_.num_available()) return std::nullopt;
  std::vector<PageId> pages;
  pages.reserve(n);
  for (int i = 0; i < n; ++i) pages.push_back(take_page());
  return pages;
}

void KvManager::return_pages(std::span<const PageId> pages) {
  for (const PageId page : pages) pool_.release(page);
}

PageId KvManager::take_page() {
  const std::optional<PageGrant> grant = pool_.allocate();
  SIEVE_CHECK(grant.has_value()) << "pool exhausted after an availability check";
  if (grant->reclaimed) prefix_.erase_page(grant->page);
  return grant->page;
}

void KvManager::copy_on_write(SeqState& s, int index, std::vector<PageCopy>* copies) {
  const PageId src = s.table.pages[index];
  const PageId dst = take_page();
  copies->push_back(PageCopy{src, dst});
  s.table.pages[index] = dst;
  pool_.release(src);
}

void KvManager::publish_full_pages(SeqState& s, std::span<const int32_t> token_ids) {
  if (!prefix_.enabled() || s.compacted) return;
  const int tpp = s.table.tokens_per_page;
  const int num_full = s.table.num_tokens / tpp;
  SIEVE_CHECK_GE(token_ids.size(), static_cast<size_t>(num_full) * tpp);
  for (int i = static_cast<int>(s.page_hashes.size()); i < num_full; ++i) {
    const PageHash& prev =
        i == 0 ? namespace_hashes_[static_cast<size_t>(s.format)] : s.page_hashes[i - 1];
    s.page_hashes.push_back(
        PrefixCache::chain_hash(prev, token_ids.subspan(static_cast<size_t>(i) * tpp, tpp)));
    prefix_.insert(s.page_hashes.back(), s.table.pages[i]);
  }
}

}  // namespace sieve::kvcache
