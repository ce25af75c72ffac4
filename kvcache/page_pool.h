#pragma once
// The pool of KV pages: a fixed number of pages of one arena, each with a reference count. An
// unreferenced page is either free (empty) or cached (it still holds prefix-cache content and is
// reclaimed least recently released first once no free page is left). Every operation is O(1).

#include <cstdint>
#include <optional>
#include <vector>

namespace sieve::kvcache {

// Index of a page in the arena (i32, as FlashInfer's kv_indices).
using PageId = int32_t;

// A page handed out by PagePool::allocate.
struct PageGrant {
  PageId page = -1;
  // The page was cached content, reclaimed: the caller drops its prefix-cache entry.
  bool reclaimed = false;
};

// Reference counts plus two lists of unreferenced pages: a free stack and an LRU of cached pages.
class PagePool {
 public:
  explicit PagePool(int num_pages);

  int num_pages() const { return static_cast<int>(pages_.size()); }
  // Pages with at least one reference.
  int num_used() const { return num_pages() - num_free() - num_cached(); }
  // Unreferenced pages that keep cached content (reclaimable).
  int num_cached() const { return num_lru_; }
  // Unreferenced empty pages.
  int num_free() const { return static_cast<int>(free_.size()); }
  // Pages allocate() can hand out now: free plus cached.
  int num_available() const { return num_free() + num_cached(); }

  // Takes an unreferenced page with reference count 1: a free one if any, else the least
  // recently released cached one (which stops being cached). Empty when every page is in use.
  std::optional<PageGrant> allocate();
  // One more reference to a used page, or to an unreferenced cached one (a prefix-cache hit,
  // which leaves the LRU); a free page has no content to share.
  void add_ref(PageId page);
  // One reference less; at zero the page becomes cached (most recently used) or free.
  void release(PageId page);
  int ref_count(PageId page) const { return entry(page).ref_count; }

  // Marks whether `page` holds content the prefix cache may hand out again. Only a used page
  // becomes cached; an unreferenced page that stops being cached is free at once.
  void set_cached(PageId page, bool cached);
  bool is_cached(PageId page) const { return entry(page).cached; }

 private:
  static constexpr PageId kNone = -1;
  struct Entry {
    int ref_count = 0;
    bool cached = false;
    PageId lru_prev = kNone;  // links of the LRU list, valid while unreferenced and cached
    PageId lru_next = kNone;
  };

  const Entry& entry(PageId page) const;
  Entry& entry(PageId page);
  void lru_push_back(PageId page);
  void lru_remove(PageId page);

  std::vector<Entry> pages_;
  std::vector<PageId> free_;  // stack of free pages
  PageId lru_head_ = kNone;   // least recently released cached page
  PageId lru_tail_ = kNone;
  int num_lru_ = 0;
};

}  // namespace sieve::kvcache
