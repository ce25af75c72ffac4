#include "kvcache/prefix_cache.h"

#include <gtest/gtest.h>

#include <vector>

namespace sieve::kvcache {
namespace {

TEST(PrefixCacheHash, ChainsOverTheWholePrefix) {
  const PageHash root = PrefixCache::namespace_hash("smollm2", "bf16");
  const std::vector<int32_t> a = {1, 2, 3, 4};
  const std::vector<int32_t> b = {1, 2, 3, 5};
  EXPECT_EQ(PrefixCache::chain_hash(root, a), PrefixCache::chain_hash(root, a));
  EXPECT_NE(PrefixCache::chain_hash(root, a), PrefixCache::chain_hash(root, b));
  // The same page after different prefixes is a different page.
  const PageHash after_a = PrefixCache::chain_hash(PrefixCache::chain_hash(root, a), a);
  const PageHash after_b = PrefixCache::chain_hash(PrefixCache::chain_hash(root, b), a);
  EXPECT_NE(after_a, after_b);
  // Lengths are hashed: a trailing zero token is not padding.
  EXPECT_NE(PrefixCache::chain_hash(root, std::vector<int32_t>{7}),
            PrefixCache::chain_hash(root, std::vector<int32_t>{7, 0}));
}

TEST(PrefixCacheHash, NamespacesSeparateModelsAndFormats) {
  const PageHash bf16 = PrefixCache::namespace_hash("smollm2", "bf16");
  EXPECT_NE(bf16, PrefixCache::namespace_hash("smollm2", "f32"));
  EXPECT_NE(bf16, PrefixCache::namespace_hash("llama", "bf16"));
  // The boundary between the two strings counts.
  EXPECT_NE(PrefixCache::namespace_hash("ab", "c"), PrefixCache::namespace_hash("a", "bc"));
}

TEST(PrefixCache, PublishesAPageAndMarksItCachedInThePool) {
  PagePool pool(2);
  PrefixCache cache(pool, true);
  const PageId page = pool.allocate()->page;
  const PageHash hash{1, 2};
  EXPECT_TRUE(cache.insert(hash, page));
  EXPECT_EQ(cache.find(hash), page);
  EXPECT_EQ(cache.hash_of(page), hash);
  EXPECT_TRUE(pool.is_cached(page));
  pool.release(page);
  EXPECT_EQ(pool.num_cached(), 1);
  EXPECT_EQ(cache.find(hash), page);  // unreferenced, still found
}

TEST(PrefixCache, KeepsTheFirstPageForAHash) {
  PagePool pool(2);
  PrefixCache cache(pool, true);
  const PageId first = pool.allocate()->page;
  const PageId second = pool.allocate()->page;
  EXPECT_TRUE(cache.insert(PageHash{1, 1}, first));
  EXPECT_FALSE(cache.insert(PageHash{1, 1}, second));
  EXPECT_FALSE(cache.insert(PageHash{2, 2}, first));  // already published under another hash
  EXPECT_EQ(cache.find(PageHash{1, 1}), first);
  EXPECT_FALSE(cache.find(PageHash{2, 2}).has_value());
  EXPECT_FALSE(pool.is_cached(second));
  EXPECT_EQ(cache.num_entries(), 1);
}

TEST(PrefixCache, DisabledCachePublishesNothing) {
  PagePool pool(1);
  PrefixCache cache(pool, false);
  const PageId page = pool.allocate()->page;
  EXPECT_FALSE(cache.insert(PageHash{1, 1}, page));
  EXPECT_FALSE(cache.find(PageHash{1, 1}).has_value());
  EXPECT_FALSE(pool.is_cached(page));
}

TEST(PrefixCache, ErasingAnUnreferencedPageFreesIt) {
  PagePool pool(1);
  PrefixCache cache(pool, true);
  const PageId page = pool.allocate()->page;
  cache.insert(PageHash{3, 4}, page);
  pool.release(page);
  cache.erase_page(page);
  EXPECT_FALSE(cache.find(PageHash{3, 4}).has_value());
  EXPECT_FALSE(cache.hash_of(page).has_value());
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_EQ(pool.num_cached(), 0);
  cache.erase_page(page);  // no entry: nothing to do
  EXPECT_EQ(cache.num_entries(), 0);
}

TEST(PrefixCache, CountsLookupsForMetrics) {
  PagePool pool(1);
  PrefixCache cache(pool, true);
  cache.record_lookup(10, 8);
  cache.record_lookup(5, 0);
  EXPECT_EQ(cache.stats().num_queries, 2);
  EXPECT_EQ(cache.stats().num_hit_queries, 1);
  EXPECT_EQ(cache.stats().num_query_tokens, 15);
  EXPECT_EQ(cache.stats().num_hit_tokens, 8);
}

}  // namespace
}  // namespace sieve::kvcache
