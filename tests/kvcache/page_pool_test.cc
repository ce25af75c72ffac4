#include "kvcache/page_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <list>
#include <random>
#include <set>
#include <vector>

namespace sieve::kvcache {
namespace {

TEST(PagePool, HandsOutEveryPageOnceThenRunsDry) {
  PagePool pool(5);
  std::set<PageId> pages;
  for (int i = 0; i < 5; ++i) {
    const std::optional<PageGrant> grant = pool.allocate();
    ASSERT_TRUE(grant.has_value());
    EXPECT_FALSE(grant->reclaimed);
    EXPECT_EQ(pool.ref_count(grant->page), 1);
    pages.insert(grant->page);
  }
  EXPECT_EQ(pages.size(), 5u);
  EXPECT_FALSE(pool.allocate().has_value());
  EXPECT_EQ(pool.num_used(), 5);
  EXPECT_EQ(pool.num_available(), 0);
}

TEST(PagePool, ReturnsEveryPageAfterRelease) {
  PagePool pool(4);
  std::vector<PageId> pages(4);
  for (PageId& page : pages) page = pool.allocate()->page;
  for (PageId page : pages) pool.release(page);
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_EQ(pool.num_used(), 0);
  EXPECT_EQ(pool.num_cached(), 0);
}

TEST(PagePool, FreesASharedPageOnlyAfterItsLastRelease) {
  PagePool pool(2);
  const PageId page = pool.allocate()->page;
  pool.add_ref(page);
  pool.release(page);
  EXPECT_EQ(pool.ref_count(page), 1);
  EXPECT_EQ(pool.num_used(), 1);
  pool.release(page);
  EXPECT_EQ(pool.num_used(), 0);
  EXPECT_EQ(pool.num_free(), 2);
}

TEST(PagePool, PrefersFreePagesOverCachedOnes) {
  PagePool pool(2);
  const PageId cached = pool.allocate()->page;
  pool.set_cached(cached, true);
  pool.release(cached);
  EXPECT_EQ(pool.num_cached(), 1);
  const PageGrant grant = *pool.allocate();
  EXPECT_NE(grant.page, cached);
  EXPECT_FALSE(grant.reclaimed);
  EXPECT_TRUE(pool.is_cached(cached));
}

TEST(PagePool, ReclaimsCachedPagesLeastRecentlyReleasedFirst) {
  PagePool pool(3);
  std::vector<PageId> pages;
  for (int i = 0; i < 3; ++i) {
    pages.push_back(pool.allocate()->page);
    pool.set_cached(pages.back(), true);
  }
  for (int i : {2, 0, 1}) pool.release(pages[i]);
  for (int i : {2, 0, 1}) {
    const PageGrant grant = *pool.allocate();
    EXPECT_EQ(grant.page, pages[i]);
    EXPECT_TRUE(grant.reclaimed);
    EXPECT_FALSE(pool.is_cached(grant.page));
  }
}

TEST(PagePool, CachedPageTakenByAHitLeavesTheLru) {
  PagePool pool(2);
  const PageId page = pool.allocate()->page;
  pool.set_cached(page, true);
  pool.release(page);
  pool.add_ref(page);  // a prefix hit
  EXPECT_EQ(pool.num_cached(), 0);
  EXPECT_EQ(pool.ref_count(page), 1);
  EXPECT_NE(pool.allocate()->page, page);
  EXPECT_FALSE(pool.allocate().has_value());
}

TEST(PagePool, UncachingAnUnreferencedPageFreesIt) {
  PagePool pool(1);
  const PageId page = pool.allocate()->page;
  pool.set_cached(page, true);
  pool.release(page);
  pool.set_cached(page, false);
  EXPECT_EQ(pool.num_cached(), 0);
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_FALSE(pool.allocate()->reclaimed);
}

TEST(PagePoolDeathTest, ReleaseOfAnUnreferencedPageIsABug) {
  PagePool pool(1);
  EXPECT_DEATH(pool.release(0), "unreferenced");
}

TEST(PagePoolDeathTest, SharingAFreePageIsABug) {
  PagePool pool(1);
  EXPECT_DEATH(pool.add_ref(0), "free page");
}

// The pool as the simplest model: counts, flags and an LRU list, with a linear search each time.
struct PoolModel {
  std::vector<int> ref_count;
  std::vector<bool> cached;
  std::list<PageId> lru;  // unreferenced cached pages, least recently released first

  explicit PoolModel(int num_pages) : ref_count(num_pages, 0), cached(num_pages, false) {}
  bool is_free(PageId page) const { return ref_count[page] == 0 && !cached[page]; }
  int num_free() const {
    int n = 0;
    for (PageId page = 0; page < static_cast<int>(ref_count.size()); ++page) n += is_free(page);
    return n;
  }
};

TEST(PagePool, RandomOperationsMatchAReferenceModel) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    const int num_pages = std::uniform_int_distribution<int>(1, 24)(rng);
    PagePool pool(num_pages);
    PoolModel model(num_pages);
    auto pick = [&](auto predicate) -> std::optional<PageId> {
      std::vector<PageId> candidates;
      for (PageId p = 0; p < num_pages; ++p) {
        if (predicate(p)) candidates.push_back(p);
      }
      if (candidates.empty()) return std::nullopt;
      return candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng)];
    };
    for (int op = 0; op < 3000; ++op) {
      switch (std::uniform_int_distribution<int>(0, 4)(rng)) {
        case 0: {  // allocate
          const std::optional<PageGrant> grant = pool.allocate();
          if (model.num_free() > 0) {
            ASSERT_TRUE(grant.has_value());
            EXPECT_TRUE(model.is_free(grant->page));
            EXPECT_FALSE(grant->reclaimed);
          } else if (!model.lru.empty()) {
            ASSERT_TRUE(grant.has_value());
            EXPECT_EQ(grant->page, model.lru.front());
            EXPECT_TRUE(grant->reclaimed);
            model.lru.pop_front();
            model.cached[grant->page] = false;
          } else {
            EXPECT_FALSE(grant.has_value());
            break;
          }
          model.ref_count[grant->page] = 1;
          break;
        }
        case 1: {  // add_ref to a used or cached page
          const auto page = pick([&](PageId p) { return !model.is_free(p); });
          if (!page) break;
          if (model.ref_count[*page] == 0) model.lru.remove(*page);
          ++model.ref_count[*page];
          pool.add_ref(*page);
          break;
        }
        case 2:
        case 3: {  // release
          const auto page = pick([&](PageId p) { return model.ref_count[p] > 0; });
          if (!page) break;
          if (--model.ref_count[*page] == 0 && model.cached[*page]) model.lru.push_back(*page);
          pool.release(*page);
          break;
        }
        case 4: {  // publish a used page, or unpublish any cached one
          const bool publish = std::bernoulli_distribution(0.6)(rng);
          const auto page = publish ? pick([&](PageId p) { return model.ref_count[p] > 0; })
                                    : pick([&](PageId p) { return model.cached[p]; });
          if (!page) break;
          if (!publish && model.ref_count[*page] == 0) model.lru.remove(*page);
          model.cached[*page] = publish;
          pool.set_cached(*page, publish);
          break;
        }
      }
      ASSERT_EQ(pool.num_free(), model.num_free()) << "op " << op;
      ASSERT_EQ(pool.num_cached(), static_cast<int>(model.lru.size())) << "op " << op;
      ASSERT_EQ(pool.num_used() + pool.num_cached() + pool.num_free(), num_pages);
      for (PageId p = 0; p < num_pages; ++p) {
        ASSERT_EQ(pool.ref_count(p), model.ref_count[p]) << "page " << p << " op " << op;
        ASSERT_EQ(pool.is_cached(p), model.cached[p]) << "page " << p << " op " << op;
      }
    }
  }
}

}  // namespace
}  // namespace sieve::kvcache
