#include "kvcache/kv_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "tests/kvcache/kv_test_util.h"

namespace sieve::kvcache {
namespace {

using testing::FakeArena;
using testing::iota_tokens;
using testing::kGeometry;
using testing::kPageBytes;
using testing::make_manager;
using testing::run_tokens;

TEST(KvManager, CreateRejectsABadConfigNamingTheField) {
  KvManagerConfig config{4, kPageBytes, kGeometry, "m", true};
  config.num_pages = 0;
  EXPECT_NE(KvManager::create(config).status().message().find("num_pages"), std::string::npos);
  config.num_pages = 4;
  config.page_bytes = 10;
  EXPECT_NE(KvManager::create(config).status().message().find("page_bytes"), std::string::npos);
  config.page_bytes = kPageBytes;
  config.geometry.head_dim = 0;
  EXPECT_NE(KvManager::create(config).status().message().find("head_dim"), std::string::npos);
}

TEST(KvManager, RejectsAFormatWhoseTokenDoesNotFitAPage) {
  const KvManagerConfig config{4, 64, kGeometry, "m", true};  // one bf16 token, no f32 token
  const std::unique_ptr<KvManager> kv = KvManager::create(config).value();
  EXPECT_EQ(kv->tokens_per_page(KvFormatId::kBF16).value(), 1);
  const StatusOr<int> f32 = kv->tokens_per_page(KvFormatId::kF32);
  ASSERT_FALSE(f32.ok());
  EXPECT_NE(f32.status().message().find("f32"), std::string::npos);
}

TEST(KvManager, AllocatesPagesAsTokensGrow) {
  const auto kv = make_manager(8);
  const std::vector<int32_t> tokens = iota_tokens(9);
  kv->add_sequence(1, KvFormatId::kBF16);
  EXPECT_EQ(kv->num_pages_needed(1, 5), 2);
  EXPECT_EQ(kv->allocate_slots(1, tokens, 5)->new_pages.size(), 2u);
  EXPECT_EQ(kv->num_pages_needed(1, 3), 0);
  EXPECT_TRUE(kv->allocate_slots(1, tokens, 3)->new_pages.empty());
  EXPECT_EQ(kv->allocate_slots(1, tokens, 1)->new_pages.size(), 1u);
  EXPECT_EQ(kv->page_table(1).num_tokens, 9);
  EXPECT_EQ(kv->page_table(1).num_pages(), 3);
  EXPECT_EQ(kv->usage().num_used, 3);
  kv->free(1);
  EXPECT_EQ(kv->usage().num_used, 0);
  EXPECT_FALSE(kv->has_sequence(1));
}

TEST(KvManager, RemembersWhatAFreedSequenceHeldUntilTakenOrCleared) {
  const auto kv = make_manager(8);
  const std::vector<int32_t> tokens = iota_tokens(9);
  kv->add_sequence(1, KvFormatId::kBF16);
  ASSERT_TRUE(kv->allocate_slots(1, tokens, 9).has_value());
  EXPECT_EQ(kv->num_kept_tokens(1), 9);
  EXPECT_FALSE(kv->take_released(1).has_value());  // not freed yet
  kv->free(1);
  const std::optional<ReleasedSeq> released = kv->take_released(1);
  ASSERT_TRUE(released.has_value());
  EXPECT_EQ(released->num_kept_tokens, 9);
  EXPECT_EQ(released->num_pages, 3);
  EXPECT_FALSE(kv->take_released(1).has_value());  // once
  // Freed, then added again (a preempted sequence readmitted): the old record is gone.
  kv->add_sequence(2, KvFormatId::kBF16);
  ASSERT_TRUE(kv->allocate_slots(2, tokens, 5).has_value());
  kv->free(2);
  kv->add_sequence(2, KvFormatId::kBF16);
  EXPECT_FALSE(kv->take_released(2).has_value());
  kv->free(2);
  EXPECT_EQ(kv->take_released(2)->num_pages, 0);
  // Cleared records are gone.
  kv->add_sequence(3, KvFormatId::kBF16);
  kv->free(3);
  kv->clear_released();
  EXPECT_FALSE(kv->take_released(3).has_value());
}

TEST(KvManager, FailedAllocationChangesNothing) {
  const auto kv = make_manager(2);
  const std::vector<int32_t> tokens = iota_tokens(8);
  kv->add_sequence(1, KvFormatId::kBF16);
  kv->add_sequence(2, KvFormatId::kBF16);
  ASSERT_TRUE(kv->allocate_slots(1, tokens, 7).has_value());
  EXPECT_FALSE(kv->can_allocate(2, 2));
  EXPECT_FALSE(kv->allocate_slots(2, tokens, 2).has_value());
  EXPECT_EQ(kv->page_table(2).num_tokens, 0);
  EXPECT_EQ(kv->page_table(2).num_pages(), 0);
  EXPECT_EQ(kv->num_available_pages(), 0);
  EXPECT_TRUE(kv->allocate_slots(1, tokens, 1).has_value());  // the last page has room
}

// Scratch pages (KVzip's reconstruction pass): taken outside every sequence, all or none, and
// back free: they never enter the prefix cache.
TEST(KvManager, BorrowedPagesComeBackFree) {
  const auto kv = make_manager(6);
  const std::vector<int32_t> tokens = iota_tokens(8);
  kv->add_sequence(1, KvFormatId::kBF16);
  ASSERT_TRUE(kv->allocate_slots(1, tokens, 8).has_value());  // two full pages, published
  EXPECT_FALSE(kv->borrow_pages(5).has_value());
  EXPECT_EQ(kv->num_available_pages(), 4);
  const std::optional<std::vector<PageId>> pages = kv->borrow_pages(3);
  ASSERT_TRUE(pages.has_value());
  ASSERT_EQ(pages->size(), 3u);
  for (const PageId page : *pages) {
    EXPECT_EQ(std::count(kv->page_table(1).pages.begin(), kv->page_table(1).pages.end(), page), 0);
  }
  EXPECT_EQ(kv->num_available_pages(), 1);
  EXPECT_EQ(kv->usage().num_used, 5);
  kv->return_pages(*pages);
  EXPECT_EQ(kv->num_available_pages(), 4);
  EXPECT_EQ(kv->usage().num_free, 4);
  EXPECT_EQ(kv->usage().num_cached, 0);
  kv->free(1);
  EXPECT_EQ(kv->usage().num_used, 0);
}

TEST(KvManager, SecondSequenceSharesTheCachedPrefixPages) {
  const auto kv = make_manager(8);
  FakeArena arena(8, testing::kMaxTokensPerPage);
  const std::vector<int32_t> a = iota_tokens(10);
  std::vector<int32_t> b(a.begin(), a.begin() + 8);
  b.insert(b.end(), {7, 7, 7});
  kv->add_sequence(1, KvFormatId::kBF16);
  run_tokens(*kv, arena, 1, a, 10);
  kv->add_sequence(2, KvFormatId::kBF16);
  EXPECT_EQ(kv->attach_cached_prefix(2, b), 8);
  EXPECT_EQ(kv->page_table(2).pages, std::vector<PageId>(kv->page_table(1).pages.begin(),
                                                         kv->page_table(1).pages.begin() + 2));
  EXPECT_EQ(kv->pool().ref_count(kv->page_table(2).pages[0]), 2);
  run_tokens(*kv, arena, 2, b, 3);
  EXPECT_TRUE(arena.holds(kv->page_table(1), a));
  EXPECT_TRUE(arena.holds(kv->page_table(2), b));
  EXPECT_EQ(kv->usage().num_used, 4);
  EXPECT_EQ(kv->prefix_stats().num_hit_tokens, 8);
  EXPECT_EQ(kv->prefix_stats().num_query_tokens, 11);
}

TEST(KvManager, NeverServesTheLastTokenFromTheCache) {
  const auto kv = make_manager(8);
  FakeArena arena(8, testing::kMaxTokensPerPage);
  const std::vector<int32_t> prompt = iota_tokens(8);
  kv->add_sequence(1, KvFormatId::kBF16);
  run_tokens(*kv, arena, 1, prompt, 8);
  kv->add_sequence(2, KvFormatId::kBF16);
  EXPECT_EQ(kv->attach_cached_prefix(2, prompt), 4);  // the second page holds the last token
}

TEST(KvManager, CachedPagesOutliveTheirSequenceAndGoTailFirst) {
  const auto kv = make_manager(3);
  FakeArena arena(3, testing::kMaxTokensPerPage);
  const std::vector<int32_t> prompt = iota_tokens(9);
  kv->add_sequence(1, KvFormatId::kBF16);
  run_tokens(*kv, arena, 1, prompt, 8);
  const std::vector<PageId> pages = kv->page_table(1).pages;
  kv->free(1);
  EXPECT_EQ(kv->usage().num_cached, 2);
  EXPECT_EQ(kv->usage().num_free, 1);
  // Two new pages: the free one, then the prefix's tail page (its head is more reusable).
  kv->add_sequence(2, KvFormatId::kBF16);
  const std::vector<int32_t> other = iota_tokens(8, 500);
  run_tokens(*kv, arena, 2, other, 8);
  EXPECT_EQ(kv->page_table(2).pages[1], pages[1]);
  kv->add_sequence(3, KvFormatId::kBF16);
  EXPECT_EQ(kv->attach_cached_prefix(3, prompt), 4);
  EXPECT_EQ(kv->page_table(3).pages[0], pages[0]);
  EXPECT_TRUE(arena.holds(kv->page_table(3), std::span(prompt).first(4)));
}

TEST(KvManager, ForkSharesPagesAndCopiesThePartialLastPageOnWrite) {
  const auto kv = make_manager(8);
  FakeArena arena(8, testing::kMaxTokensPerPage);
  std::vector<int32_t> parent = iota_tokens(6);
  kv->add_sequence(1, KvFormatId::kBF16);
  run_tokens(*kv, arena, 1, parent, 6);
  kv->fork(1, 2);
  std::vector<int32_t> child = parent;
  EXPECT_EQ(kv->page_table(2).pages, kv->page_table(1).pages);
  EXPECT_EQ(kv->pool().ref_count(kv->page_table(1).pages[1]), 2);
  EXPECT_EQ(kv->num_pages_needed(2, 1), 1);  // the copy

  child.push_back(42);
  const PageId shared_last = kv->page_table(1).pages[1];
  const std::optional<SlotAllocation> allocation = kv->allocate_slots(2, child, 1);
  ASSERT_EQ(allocation->copies.size(), 1u);
  EXPECT_EQ(allocation->copies[0].src, shared_last);
  EXPECT_EQ(allocation->copies[0].dst, kv->page_table(2).pages[1]);
  arena.apply(allocation->copies);
  arena.write(kv->page_table(2), 6, 42);
  // The parent now owns its last page alone and writes it in place.
  parent.push_back(43);
  EXPECT_EQ(kv->num_pages_needed(1, 1), 0);
  run_tokens(*kv, arena, 1, parent, 1);
  EXPECT_TRUE(arena.holds(kv->page_table(1), parent));
  EXPECT_TRUE(arena.holds(kv->page_table(2), child));
  EXPECT_EQ(kv->pool().ref_count(kv->page_table(1).pages[0]), 2);
}

TEST(KvManager, WithPrefixCachingOffSharesNothing) {
  const auto kv = make_manager(8, /*prefix_caching=*/false);
  FakeArena arena(8, testing::kMaxTokensPerPage);
  const std::vector<int32_t> prompt = iota_tokens(9);
  kv->add_sequence(1, KvFormatId::kBF16);
  run_tokens(*kv, arena, 1, prompt, 9);
  kv->add_sequence(2, KvFormatId::kBF16);
  EXPECT_EQ(kv->attach_cached_prefix(2, prompt), 0);
  kv->free(1);
  EXPECT_EQ(kv->usage().num_cached, 0);
  EXPECT_EQ(kv->usage().num_free, 8);
  EXPECT_EQ(kv->prefix_cache().num_entries(), 0);
}

TEST(KvManager, FormatsShareOnePoolButNeverEachOthersPages) {
  const auto kv = make_manager(8);
  FakeArena arena(8, testing::kMaxTokensPerPage);
  const std::vector<int32_t> prompt = iota_tokens(9);
  kv->add_sequence(1, KvFormatId::kBF16);
  run_tokens(*kv, arena, 1, prompt, 9);
  kv->add_sequence(2, KvFormatId::kF32);
  EXPECT_EQ(kv->page_table(2).tokens_per_page, 2);
  EXPECT_EQ(kv->attach_cached_prefix(2, prompt), 0);
  run_tokens(*kv, arena, 2, prompt, 9);
  EXPECT_EQ(kv->page_table(2).num_pages(), 5);
  EXPECT_EQ(kv->usage().num_used, 3 + 5);
  kv->add_sequence(3, KvFormatId::kF32);
  EXPECT_EQ(kv->attach_cached_prefix(3, prompt), 8);  // its own format's pages
  EXPECT_TRUE(arena.holds(kv->page_table(3), std::span(prompt).first(8)));
}

TEST(KvManager, CountsALookupOnlyOnceItsSequenceGetsSlots) {
  const auto kv = make_manager(8);
  FakeArena arena(8, testing::kMaxTokensPerPage);
  const std::vector<int32_t> prompt = iota_tokens(9);
  kv->add_sequence(1, KvFormatId::kBF16);
  kv->attach_cached_prefix(1, prompt);
  kv->free(1);  // admission gave up
  EXPECT_EQ(kv->prefix_stats().num_queries, 0);
  kv->add_sequence(1, KvFormatId::kBF16);
  kv->attach_cached_prefix(1, prompt);
  run_tokens(*kv, arena, 1, prompt, 9);
  EXPECT_EQ(kv->prefix_stats().num_queries, 1);
  EXPECT_EQ(kv->prefix_stats().num_hit_queries, 0);
}

TEST(KvManager, KeepsTheFirstOfTwoIdenticalPagesComputedTogether) {
  const auto kv = make_manager(8);
  FakeArena arena(8, testing::kMaxTokensPerPage);
  const std::vector<int32_t> prompt = iota_tokens(5);
  for (SeqId seq : {1, 2}) {
    kv->add_sequence(seq, KvFormatId::kBF16);
    EXPECT_EQ(kv->attach_cached_prefix(seq, prompt), 0);
  }
  run_tokens(*kv, arena, 1, prompt, 5);
  run_tokens(*kv, arena, 2, prompt, 5);
  EXPECT_EQ(kv->prefix_cache().num_entries(), 1);
  EXPECT_EQ(kv->prefix_cache().find(*kv->prefix_cache().hash_of(kv->page_table(1).pages[0])),
            kv->page_table(1).pages[0]);
  kv->free(1);
  kv->free(2);
  EXPECT_EQ(kv->usage().num_cached, 1);
  EXPECT_EQ(kv->usage().num_free, 7);
}

}  // namespace
}  // namespace sieve::kvcache
