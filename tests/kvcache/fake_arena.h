#pragma once
// A stand-in for the KV arena in host tests: each slot holds the token id whose K/V it would hold.
// Tests apply what the KvManager returns (copies, writes, compaction moves) and then check that
// every sequence's pages hold exactly its tokens: a wrong share, a missed copy-on-write or a page
// handed to two owners shows up as a wrong token.

#include <gtest/gtest.h>

#include <span>
#include <string>
#include <vector>

#include "kvcache/kv_manager.h"
#include "kvcache/page_table.h"

namespace sieve::kvcache::testing {

class FakeArena {
 public:
  // `max_tokens_per_page`: the largest tokens_per_page of any format in the pool.
  FakeArena(int num_pages, int max_tokens_per_page)
      : pages_(num_pages, std::vector<int32_t>(max_tokens_per_page, kUnwritten)) {}

  void apply(std::span<const PageCopy> copies) {
    for (const PageCopy& copy : copies) pages_.at(copy.dst) = pages_.at(copy.src);
  }

  void write(const PageTable& table, int index, int32_t token) {
    pages_.at(table.pages.at(index / table.tokens_per_page)).at(index % table.tokens_per_page) =
        token;
  }

  int32_t read(const PageTable& table, int index) const {
    return pages_.at(table.pages.at(index / table.tokens_per_page))
        .at(index % table.tokens_per_page);
  }

  // Moves the slots `kept` (ascending, indices into `source_pages`) to the front of `table`, as a
  // compactor that keeps the same slots in every layer and head would.
  void compact(std::span<const PageId> source_pages, std::span<const int> kept,
               const PageTable& table) {
    std::vector<int32_t> values;
    const int tpp = table.tokens_per_page;
    for (int slot : kept) values.push_back(pages_.at(source_pages[slot / tpp]).at(slot % tpp));
    for (size_t i = 0; i < values.size(); ++i) write(table, static_cast<int>(i), values[i]);
  }

  // Whether the table's slots [0, num_tokens) hold `expected`.
  ::testing::AssertionResult holds(const PageTable& table,
                                   std::span<const int32_t> expected) const {
    if (static_cast<size_t>(table.num_tokens) != expected.size()) {
      return ::testing::AssertionFailure()
             << "table holds " << table.num_tokens << " slots, expected " << expected.size();
    }
    for (int i = 0; i < table.num_tokens; ++i) {
      if (read(table, i) != expected[i]) {
        return ::testing::AssertionFailure()
               << "slot " << i << " (page " << table.pages[i / table.tokens_per_page] << ") holds "
               << read(table, i) << ", expected " << expected[i];
      }
    }
    return ::testing::AssertionSuccess();
  }

 private:
  static constexpr int32_t kUnwritten = -1;
  std::vector<std::vector<int32_t>> pages_;
};

}  // namespace sieve::kvcache::testing
