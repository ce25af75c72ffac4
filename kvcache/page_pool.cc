#include "kvcache/page_pool.h"

#include "core/check.h"

namespace sieve::kvcache {

PagePool::PagePool(int num_pages) : pages_(num_pages) {
  SIEVE_CHECK_GT(num_pages, 0);
  free_.reserve(num_pages);
  // Reversed so that pages are handed out in ascending order at first (easier to read in tests).
  for (PageId page = num_pages - 1; page >= 0; --page) free_.push_back(page);
}

const PagePool::Entry& PagePool::entry(PageId page) const {
  SIEVE_CHECK(page >= 0 && page < num_pages()) << "page " << page << " of " << num_pages();
  return pages_[page];
}

PagePool::Entry& PagePool::entry(PageId page) {
  SIEVE_CHECK(page >= 0 && page < num_pages()) << "page " << page << " of " << num_pages();
  return pages_[page];
}

std::optional<PageGrant> PagePool::allocate() {
  PageGrant grant;
  if (!free_.empty()) {
    grant.page = free_.back();
    free_.pop_back();
  } else if (lru_head_ != kNone) {
    grant.page = lru_head_;
    lru_remove(grant.page);
    pages_[grant.page].cached = false;
    grant.reclaimed = true;
  } else {
    return std::nullopt;
  }
  pages_[grant.page].ref_count = 1;
  return grant;
}

void PagePool::add_ref(PageId page) {
  Entry& e = entry(page);
  if (e.ref_count == 0) {
    SIEVE_CHECK(e.cached) << "add_ref on free page " << page;
    lru_remove(page);
  }
  ++e.ref_count;
}

void PagePool::release(PageId page) {
  Entry& e = entry(page);
  SIEVE_CHECK_GT(e.ref_count, 0) << "release of unreferenced page " << page;
  if (--e.ref_count > 0) return;
  if (e.cached) {
    lru_push_back(page);
  } else {
    free_.push_back(page);
  }
}

void PagePool::set_cached(PageId page, bool cached) {
  Entry& e = entry(page);
  if (e.cached == cached) return;
  if (e.ref_count == 0) {
    SIEVE_CHECK(!cached) << "only a used page can become cached, page " << page;
    lru_remove(page);
    free_.push_back(page);
  }
  e.cached = cached;
}

void PagePool::lru_push_back(PageId page) {
  Entry& e = pages_[page];
  e.lru_prev = lru_tail_;
  e.lru_next = kNone;
  if (lru_tail_ != kNone) {
    pages_[lru_tail_].lru_next = page;
  } else {
    lru_head_ = page;
  }
  lru_tail_ = page;
  ++num_lru_;
}

void PagePool::lru_remove(PageId page) {
  Entry& e = pages_[page];
  if (e.lru_prev != kNone) {
    pages_[e.lru_prev].lru_next = e.lru_next;
  } else {
    lru_head_ = e.lru_next;
  }
  if (e.lru_next != kNone) {
    pages_[e.lru_next].lru_prev = e.lru_prev;
  } else {
    lru_tail_ = e.lru_prev;
  }
  e.lru_prev = e.lru_next = kNone;
  --num_lru_;
}

}  // namespace sieve::kvcache
