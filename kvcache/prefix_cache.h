#pragma once
// Prefix caching of full pages (vLLM v1's automatic prefix caching). A full page is published
// under a hash chained over everything before it:
//   hash(page i) = H(hash(page i-1), token ids of page i),  hash(page -1) = H(model id, KV format)
// so equal hashes mean equal prefixes, in the same model and format. A published page is shared
// by reference count; once unreferenced it stays in the pool's LRU of cached pages until the pool
// reclaims it for a new allocation.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kvcache/page_pool.h"

namespace sieve::kvcache {

// 128-bit page hash, so that an accidental collision (which would serve wrong KV) is out of reach.
struct PageHash {
  uint64_t hi = 0;
  uint64_t lo = 0;
  friend bool operator==(const PageHash&, const PageHash&) = default;
};

// Counters for metrics: lookups made at admission and what they found.
struct PrefixCacheStats {
  int64_t num_queries = 0;       // sequences looked up
  int64_t num_hit_queries = 0;   // of those, with at least one cached page
  int64_t num_query_tokens = 0;  // tokens looked up
  int64_t num_hit_tokens = 0;    // tokens served from the cache
};

// The hash -> page map over a PagePool, whose `cached` marks it keeps in step.
class PrefixCache {
 public:
  // The hash before a sequence's first page: pages of different namespaces never match.
  static PageHash namespace_hash(std::string_view model_id, std::string_view kv_format_name);
  // The hash of a full page holding `token_ids`, after the page hashed `prev`.
  static PageHash chain_hash(const PageHash& prev, std::span<const int32_t> token_ids);

  // `pool` outlives the cache. When disabled, nothing is ever published or found.
  PrefixCache(PagePool& pool, bool enabled);

  bool enabled() const { return enabled_; }
  int num_entries() const { return static_cast<int>(pages_.size()); }
  // The page published under `hash`, if any.
  std::optional<PageId> find(const PageHash& hash) const;
  // Publishes used `page` under `hash` and marks it cached in the pool. Returns false (and
  // changes nothing) when disabled, when `hash` has a page already, or when `page` is published.
  bool insert(const PageHash& hash, PageId page);
  // Forgets `page`'s entry, if any (reclaimed by the pool, or about to be rewritten); an
  // unreferenced page becomes free.
  void erase_page(PageId page);
  // Whether `page` is published, and under which hash.
  std::optional<PageHash> hash_of(PageId page) const { return page_hashes_[page]; }

  // Counts one admission lookup of `num_query_tokens` that found `num_hit_tokens`.
  void record_lookup(int num_query_tokens, int num_hit_tokens);
  const PrefixCacheStats& stats() const { return stats_; }

 private:
  struct HashOfPageHash {
    size_t operator()(const PageHash& hash) const { return static_cast<size_t>(hash.lo); }
  };

  PagePool& pool_;
  bool enabled_;
  std::unordered_map<PageHash, PageId, HashOfPageHash> pages_;
  std::vector<std::optional<PageHash>> page_hashes_;  // indexed by page
  PrefixCacheStats stats_;
};

}  // namespace sieve::kvcache
