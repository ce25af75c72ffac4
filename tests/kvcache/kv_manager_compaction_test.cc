// Compaction accounting of the KvManager: which pages a compaction keeps, copies and releases,
// and the per-(layer, KV head) lengths it leaves.

#include <gtest/gtest.h>

#include <vector>

#include "kvcache/kv_manager.h"
#include "tests/kvcache/kv_test_util.h"

namespace sieve::kvcache {
namespace {

using testing::FakeArena;
using testing::iota_tokens;
using testing::kNumHeads;
using testing::make_manager;
using testing::run_tokens;

TEST(KvManagerCompaction, ReleasesTrailingPagesThatNoHeadUses) {
  const auto kv = make_manager(8);
  kv->add_sequence(1, KvFormatId::kBF16);
  ASSERT_TRUE(kv->allocate_slots(1, iota_tokens(10), 10).has_value());
  const std::vector<PageId> before = kv->page_table(1).pages;
  const CompactionResult result = kv->compact(1, std::vector<int32_t>(kNumHeads, 4)).value();
  EXPECT_TRUE(result.copies.empty());
  EXPECT_EQ(result.source_pages, before);
  EXPECT_EQ(result.released_pages, (std::vector<PageId>{before[2], before[1]}));
  EXPECT_EQ(kv->page_table(1).pages, std::vector<PageId>{before[0]});
  EXPECT_EQ(kv->page_table(1).num_tokens, 4);
  EXPECT_EQ(kv->usage().num_used, 1);
  EXPECT_EQ(kv->num_available_pages(), 7);
  // Freed, it is remembered as holding what compaction left.
  kv->free(1);
  const std::optional<ReleasedSeq> released = kv->take_released(1);
  ASSERT_TRUE(released.has_value());
  EXPECT_EQ(released->num_kept_tokens, 4);
  EXPECT_EQ(released->num_pages, 1);
}

TEST(KvManagerCompaction, KeepsThePagesItsLongestHeadStillUses) {
  const auto kv = make_manager(8);
  kv->add_sequence(1, KvFormatId::kBF16);
  ASSERT_TRUE(kv->allocate_slots(1, iota_tokens(12), 12).has_value());
  const CompactionResult result = kv->compact(1, std::vector<int32_t>{1, 1, 6, 2}).value();
  EXPECT_EQ(result.released_pages.size(), 1u);
  EXPECT_EQ(kv->page_table(1).num_pages(), 2);
  EXPECT_EQ(kv->page_table(1).num_tokens, 6);
  EXPECT_EQ(kv->head_valid_len(1, 0, 0), 1);
  EXPECT_EQ(kv->head_valid_len(1, 1, 0), 6);
  EXPECT_EQ(kv->head_valid_len(1, 1, 1), 2);
}

TEST(KvManagerCompaction, HeadLengthsCountTokensAppendedAfterTheGap) {
  const auto kv = make_manager(8);
  kv->add_sequence(1, KvFormatId::kBF16);
  const std::vector<int32_t> tokens = iota_tokens(20);
  ASSERT_TRUE(kv->allocate_slots(1, tokens, 10).has_value());
  EXPECT_TRUE(kv->head_lengths(1).prefix_lens.empty());
  EXPECT_EQ(kv->head_lengths(1).gap_end, 10);
  ASSERT_TRUE(kv->compact(1, std::vector<int32_t>{2, 5, 5, 3}).ok());
  ASSERT_TRUE(kv->allocate_slots(1, tokens, 3).has_value());  // slots 5, 6, 7
  const HeadLengths lengths = kv->head_lengths(1);
  EXPECT_EQ(std::vector<int32_t>(lengths.prefix_lens.begin(), lengths.prefix_lens.end()),
            (std::vector<int32_t>{2, 5, 5, 3}));
  EXPECT_EQ(lengths.gap_end, 5);
  EXPECT_EQ(kv->num_tokens(1), 8);
  EXPECT_EQ(kv->head_valid_len(1, 0, 0), 2 + 3);
  EXPECT_EQ(kv->head_valid_len(1, 0, 1), 5 + 3);
  // Kept tokens: the mean over heads of (2, 5, 5, 3) + 3 = 6.75, rounded.
  EXPECT_EQ(kv->num_kept_tokens(1), 7);
  // A second compaction may keep up to each head's valid slots, survivors and appended alike.
  ASSERT_TRUE(kv->compact(1, std::vector<int32_t>{5, 1, 8, 6}).ok());
  EXPECT_EQ(kv->num_tokens(1), 8);
  EXPECT_EQ(kv->head_lengths(1).gap_end, 8);
  EXPECT_EQ(kv->head_valid_len(1, 0, 0), 5);
}

TEST(KvManagerCompactionDeathTest, KeepingMoreSlotsThanAHeadHoldsIsABug) {
  const auto kv = make_manager(8);
  kv->add_sequence(1, KvFormatId::kBF16);
  ASSERT_TRUE(kv->allocate_slots(1, iota_tokens(6), 6).has_value());
  ASSERT_TRUE(kv->compact(1, std::vector<int32_t>{2, 6, 6, 6}).ok());
  EXPECT_DEATH((void)kv->compact(1, std::vector<int32_t>{3, 6, 6, 6}), "keeps 3 of 2");
}

TEST(KvManagerCompaction, CopiesSharedPagesBeforeRewritingThem) {
  const auto kv = make_manager(8);
  FakeArena arena(8, testing::kMaxTokensPerPage);
  const std::vector<int32_t> a = iota_tokens(8);
  std::vector<int32_t> b = a;
  b.insert(b.end(), {1, 2});
  kv->add_sequence(1, KvFormatId::kBF16);
  run_tokens(*kv, arena, 1, a, 8);
  kv->add_sequence(2, KvFormatId::kBF16);
  ASSERT_EQ(kv->attach_cached_prefix(2, b), 8);
  run_tokens(*kv, arena, 2, b, 2);
  const std::vector<PageId> shared = kv->page_table(1).pages;

  // Sequence 2 keeps slots {0, 5, 8}: its first page is shared, so the compactor gets a copy.
  const std::vector<int> kept = {0, 5, 8};
  const CompactionResult result = kv->compact(2, std::vector<int32_t>(kNumHeads, 3)).value();
  ASSERT_EQ(result.copies.size(), 1u);
  EXPECT_EQ(result.copies[0].src, shared[0]);
  EXPECT_EQ(kv->page_table(2).pages, std::vector<PageId>{result.copies[0].dst});
  EXPECT_EQ(result.released_pages.size(), 2u);
  arena.apply(result.copies);
  arena.compact(result.source_pages, kept, kv->page_table(2));

  EXPECT_TRUE(arena.holds(kv->page_table(1), a));
  EXPECT_TRUE(arena.holds(kv->page_table(2), std::vector<int32_t>{a[0], a[5], b[8]}));
  EXPECT_EQ(kv->pool().ref_count(shared[0]), 1);
  EXPECT_EQ(kv->pool().ref_count(shared[1]), 1);
  EXPECT_EQ(kv->usage().num_used, 3);
}

TEST(KvManagerCompaction, UnpublishesThePagesItRewrites) {
  const auto kv = make_manager(8);
  FakeArena arena(8, testing::kMaxTokensPerPage);
  const std::vector<int32_t> prompt = iota_tokens(13);
  kv->add_sequence(1, KvFormatId::kBF16);
  run_tokens(*kv, arena, 1, prompt, 12);
  EXPECT_EQ(kv->prefix_cache().num_entries(), 3);
  const PageId third = kv->page_table(1).pages[2];
  ASSERT_TRUE(kv->compact(1, std::vector<int32_t>(kNumHeads, 6)).ok());
  // Pages 0 and 1 now hold survivors; page 2 left intact, still cached for its prefix.
  EXPECT_EQ(kv->prefix_cache().num_entries(), 1);
  EXPECT_TRUE(kv->prefix_cache().hash_of(third).has_value());
  EXPECT_EQ(kv->usage().num_cached, 1);
  kv->add_sequence(2, KvFormatId::kBF16);
  EXPECT_EQ(kv->attach_cached_prefix(2, prompt), 0);
}

TEST(KvManagerCompaction, FailsWithoutPagesForItsCopiesAndChangesNothing) {
  const auto kv = make_manager(2);
  kv->add_sequence(1, KvFormatId::kBF16);
  ASSERT_TRUE(kv->allocate_slots(1, iota_tokens(6), 6).has_value());
  kv->fork(1, 2);
  const PageTable before = kv->page_table(2);
  const StatusOr<CompactionResult> result = kv->compact(2, std::vector<int32_t>(kNumHeads, 5));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(kv->page_table(2).pages, before.pages);
  EXPECT_EQ(kv->num_tokens(2), 6);
  EXPECT_EQ(kv->pool().ref_count(before.pages[0]), 2);
  EXPECT_TRUE(kv->head_lengths(2).prefix_lens.empty());
}

TEST(KvManagerCompaction, CompactedSequencePublishesNoMorePages) {
  const auto kv = make_manager(8);
  const std::vector<int32_t> tokens = iota_tokens(20);
  kv->add_sequence(1, KvFormatId::kBF16);
  ASSERT_TRUE(kv->allocate_slots(1, tokens, 6).has_value());
  ASSERT_TRUE(kv->compact(1, std::vector<int32_t>(kNumHeads, 2)).ok());
  EXPECT_EQ(kv->prefix_cache().num_entries(), 0);
  ASSERT_TRUE(kv->allocate_slots(1, tokens, 10).has_value());  // fills pages 0..2
  EXPECT_EQ(kv->prefix_cache().num_entries(), 0);
  kv->free(1);
  EXPECT_EQ(kv->usage().num_free, 8);
}

TEST(KvManagerCompaction, EvictingEverythingLeavesAnEmptyTable) {
  const auto kv = make_manager(4);
  kv->add_sequence(1, KvFormatId::kBF16);
  ASSERT_TRUE(kv->allocate_slots(1, iota_tokens(7), 7).has_value());
  const CompactionResult result = kv->compact(1, std::vector<int32_t>(kNumHeads, 0)).value();
  EXPECT_EQ(result.released_pages.size(), 2u);
  EXPECT_EQ(kv->page_table(1).num_pages(), 0);
  EXPECT_EQ(kv->num_tokens(1), 0);
  EXPECT_EQ(kv->usage().num_used, 0);
}

}  // namespace
}  // namespace sieve::kvcache
