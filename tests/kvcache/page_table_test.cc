#include "kvcache/page_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace sieve::kvcache {
namespace {

TEST(PageTable, SlotsFollowPagesAndOffsets) {
  const PageTable table{4, 6, {7, 2}};
  EXPECT_EQ(table.slot(0), 28);
  EXPECT_EQ(table.slot(3), 31);
  EXPECT_EQ(table.slot(4), 8);
  EXPECT_EQ(table.slot(5), 9);
  EXPECT_EQ(table.last_page_len(), 2);
  EXPECT_EQ(pages_for_tokens(0, 4), 0);
  EXPECT_EQ(pages_for_tokens(4, 4), 1);
  EXPECT_EQ(pages_for_tokens(5, 4), 2);
}

TEST(BatchPageTables, BuildsFlashInferCsrForADecodeAndAPrefillChunk) {
  const PageTable decode{4, 9, {3, 0, 5}};  // one new token at slot 8
  const PageTable prefill{4, 4, {1}};       // a first chunk of 4 tokens
  const std::vector<BatchSeq> seqs = {{&decode, 1}, {&prefill, 4}};
  BatchPageTables out;
  build_batch_page_tables(seqs, &out);
  EXPECT_EQ(out.kv_indptr, (std::vector<int32_t>{0, 3, 4}));
  EXPECT_EQ(out.kv_indices, (std::vector<int32_t>{3, 0, 5, 1}));
  EXPECT_EQ(out.kv_last_page_len, (std::vector<int32_t>{1, 4}));
  EXPECT_EQ(out.kv_lens, (std::vector<int32_t>{9, 4}));
  EXPECT_EQ(out.slot_mapping, (std::vector<int32_t>{20, 4, 5, 6, 7}));
}

// Reference: walk every token of every sequence, counting pages and offsets by hand.
TEST(BatchPageTables, RandomBatchesMatchATokenByTokenWalk) {
  for (uint32_t seed = 1; seed <= 50; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    const int num_seqs = std::uniform_int_distribution<int>(0, 6)(rng);
    std::vector<PageTable> tables(num_seqs);
    std::vector<BatchSeq> seqs;
    PageId next_page = 0;
    for (PageTable& table : tables) {
      table.tokens_per_page = std::uniform_int_distribution<int>(1, 8)(rng);
      table.num_tokens = std::uniform_int_distribution<int>(0, 40)(rng);
      for (int i = 0; i < pages_for_tokens(table.num_tokens, table.tokens_per_page); ++i) {
        table.pages.push_back(next_page++);
      }
      const int num_new = std::uniform_int_distribution<int>(0, table.num_tokens)(rng);
      seqs.push_back({&table, num_new});
    }
    std::shuffle(seqs.begin(), seqs.end(), rng);
    BatchPageTables out;
    out.slot_mapping = {99};  // stale content must go
    build_batch_page_tables(seqs, &out);

    std::vector<int32_t> slot_mapping;
    ASSERT_EQ(out.kv_indptr.size(), seqs.size() + 1);
    for (size_t s = 0; s < seqs.size(); ++s) {
      const PageTable& table = *seqs[s].table;
      std::vector<int32_t> pages;
      int page = -1;
      int offset = table.tokens_per_page;
      for (int t = 0; t < table.num_tokens; ++t) {
        if (offset == table.tokens_per_page) {
          pages.push_back(table.pages[++page]);
          offset = 0;
        }
        if (t >= table.num_tokens - seqs[s].num_new_tokens) {
          slot_mapping.push_back(pages.back() * table.tokens_per_page + offset);
        }
        ++offset;
      }
      const std::vector<int32_t> got(out.kv_indices.begin() + out.kv_indptr[s],
                                     out.kv_indices.begin() + out.kv_indptr[s + 1]);
      EXPECT_EQ(got, pages);
      EXPECT_EQ(out.kv_lens[s], table.num_tokens);
      EXPECT_EQ(out.kv_last_page_len[s], table.num_tokens == 0 ? 0 : offset);
    }
    EXPECT_EQ(out.slot_mapping, slot_mapping);
  }
}

}  // namespace
}  // namespace sieve::kvcache
