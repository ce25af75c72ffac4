#pragma once
// KvManager: the host-side KV accounting the scheduler and the engine use. It owns the page pool,
// the prefix cache and one page table per sequence, and speaks only in tokens and pages: it never
// touches KV data. Where data must move (copy-on-write, compaction), it returns the page lists
// for the backend to act on, in the order given. One thread (the engine's) owns it.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/status.h"
#include "kvcache/formats.h"
#include "kvcache/page_pool.h"
#include "kvcache/page_table.h"
#include "kvcache/prefix_cache.h"

namespace sieve::kvcache {

// Identifies a sequence (the scheduler assigns them).
using SeqId = uint64_t;

// Sizes the pool. Each sequence's format then decides its tokens per page.
struct KvManagerConfig {
  int num_pages = 0;
  size_t page_bytes = 0;  // bytes of one page across all layers
  KvGeometry geometry;
  std::string model_id;  // namespaces prefix-cache hashes
  bool enable_prefix_caching = true;
};

// Copy page `src` to page `dst` (all layers, K and V) before anything writes `dst`.
struct PageCopy {
  PageId src = -1;
  PageId dst = -1;
};

// What allocate_slots did: execute `copies` before the step writes KV.
struct SlotAllocation {
  std::vector<PageId> new_pages;  // appended to the table, in order
  std::vector<PageCopy> copies;   // copy-on-write of a shared last page (its table entry is dst)
};

// What compact() did, for the compactor: run `copies` first; then, for each (layer, KV head), move
// its surviving slots, read through `source_pages` (the table before trimming), to the front of the
// table. `released_pages` left the table; the pool reuses them only after that data movement.
struct CompactionResult {
  std::vector<PageCopy> copies;
  std::vector<PageId> source_pages;
  std::vector<PageId> released_pages;
};

// Per-(layer, KV head) valid slots of a compacted sequence. Head (l, h) holds valid slots
// [0, prefix_lens[l * num_kv_heads + h]) and [gap_end, num_tokens): its compacted survivors, then
// every token appended since; slots between are dead. Never compacted: prefix_lens is empty and
// every slot is valid.
struct HeadLengths {
  std::span<const int32_t> prefix_lens;
  int gap_end = 0;
};

// Page counts for metrics.
struct KvCacheUsage {
  int num_pages = 0;
  int num_used = 0;    // referenced by a sequence
  int num_cached = 0;  // unreferenced, kept for prefix hits, reclaimable
  int num_free = 0;
};

// What a sequence held when free() released it: its kept token slots and its pages.
struct ReleasedSeq {
  int num_kept_tokens = 0;  // see KvManager::num_kept_tokens
  int num_pages = 0;
};

class KvManager {
 public:
  // Fails with INVALID_ARGUMENT naming the field when the config cannot make a pool.
  static StatusOr<std::unique_ptr<KvManager>> create(const KvManagerConfig& config);

  const KvManagerConfig& config() const { return config_; }
  // Tokens of `format` per page; OK only when at least one fits (validate requests with it).
  StatusOr<int> tokens_per_page(KvFormatId format) const;
  int num_available_pages() const { return pool_.num_available(); }
  KvCacheUsage usage() const;
  const PrefixCacheStats& prefix_stats() const { return prefix_.stats(); }
  const PagePool& pool() const { return pool_; }
  const PrefixCache& prefix_cache() const { return prefix_; }

  // Starts accounting for `seq` (which holds no pages yet) in `format`.
  void add_sequence(SeqId seq, KvFormatId format);
  bool has_sequence(SeqId seq) const { return seqs_.contains(seq); }
  // Attaches the longest run of cached full pages that starts `token_ids` to `seq`, which holds
  // no pages. The last token is never served from the cache (its logits are needed). Returns the
  // number of tokens attached: the sequence's num_computed_tokens.
  int attach_cached_prefix(SeqId seq, std::span<const int32_t> token_ids);
  // Pages allocate_slots(seq, num_new_tokens) takes from the pool (a copy-on-write included).
  int num_pages_needed(SeqId seq, int num_new_tokens) const;
  bool can_allocate(SeqId seq, int num_new_tokens) const {
    return num_pages_needed(seq, num_new_tokens) <= num_available_pages();
  }
  // Grows `seq` by `num_new_tokens` slots and publishes the pages this fills. `token_ids` are all
  // of the sequence's tokens, at least through the new ones. Empty, with nothing changed, when
  // the pool is short.
  std::optional<SlotAllocation> allocate_slots(SeqId seq, std::span<const int32_t> token_ids,
                                               int num_new_tokens);
  // Releases every page of `seq` (published ones stay cached) and forgets it, keeping what it
  // held for take_released().
  void free(SeqId seq);
  // What `seq` held when it was last freed, once; empty when it was not freed since the last
  // clear_released() or add_sequence() of it. The engine reads a finished sequence's here.
  std::optional<ReleasedSeq> take_released(SeqId seq);
  // Forgets every released record (those of preempted sequences, which nobody takes).
  void clear_released() { released_.clear(); }
  // Starts `child` as a copy of `parent` sharing all its pages; whichever later writes a shared
  // page copies it first (allocate_slots returns the copy).
  void fork(SeqId parent, SeqId child);

  // Compaction accounting: head (l, h) of `seq` keeps new_head_lens[l * num_kv_heads + h] slots,
  // packed at the front. Shared pages the compactor will rewrite are copied first, published ones
  // leave the prefix cache, and pages past the longest head are released. RESOURCE_EXHAUSTED,
  // with nothing changed, when the pool is short of pages for the copies.
  StatusOr<CompactionResult> compact(SeqId seq, std::span<const int32_t> new_head_lens);

  // Scratch pages outside every sequence and the prefix cache (KVzip's reconstruction pass
  // writes its repeated tokens there): `n` pages, one reference each; empty, with nothing taken,
  // when the pool has fewer available. return_pages() gives them back, free.
  std::optional<std::vector<PageId>> borrow_pages(int n);
  void return_pages(std::span<const PageId> pages);

  const PageTable& page_table(SeqId seq) const;
  KvFormatId format(SeqId seq) const;
  int num_tokens(SeqId seq) const { return page_table(seq).num_tokens; }
  HeadLengths head_lengths(SeqId seq) const;
  // Valid slots of head (layer, kv_head) of `seq`: what attention reads for that head.
  int head_valid_len(SeqId seq, int layer, int kv_head) const;
  // Token slots whose K/V `seq` holds: num_tokens, or once compacted the mean over (layer, KV
  // head) of head_valid_len, rounded to nearest.
  int num_kept_tokens(SeqId seq) const;

 private:
  // One sequence's accounting.
  struct SeqState {
    KvFormatId format = KvFormatId::kBF16;
    PageTable table;
    // Chained hashes of the table's first page_hashes.size() pages (full pages only).
    std::vector<PageHash> page_hashes;
    // Set by compact(): slots no longer follow token positions, so nothing more is published.
    bool compacted = false;
    std::vector<int32_t> head_prefix_lens;  // see HeadLengths
    int gap_end = 0;
    // (tokens looked up, tokens hit) of an attach, counted once the sequence gets its slots.
    std::optional<std::pair<int, int>> pending_lookup;
  };

  explicit KvManager(const KvManagerConfig& config);
  SeqState& state(SeqId seq);
  const SeqState& state(SeqId seq) const;
  PageId take_page();
  // Replaces table entry `index` of `s` by a private copy, listed in `copies`.
  void copy_on_write(SeqState& s, int index, std::vector<PageCopy>* copies);
  void publish_full_pages(SeqState& s, std::span<const int32_t> token_ids);

  KvManagerConfig config_;
  PagePool pool_;
  PrefixCache prefix_;
  std::vector<PageHash> namespace_hashes_;  // indexed by KvFormatId
  std::unordered_map<SeqId, SeqState> seqs_;
  std::unordered_map<SeqId, ReleasedSeq> released_;  // freed sequences, until taken or cleared
};

}  // namespace sieve::kvcache
