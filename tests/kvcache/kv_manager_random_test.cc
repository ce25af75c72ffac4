// Long random sequences of KvManager operations (add with prefix lookup, grow, fork, free,
// compact) checked after every operation against a reference model: each sequence's expected
// slot contents (through a fake arena) and each page's expected reference count.

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "kvcache/kv_manager.h"
#include "tests/kvcache/kv_test_util.h"

namespace sieve::kvcache {
namespace {

using testing::FakeArena;
using testing::kNumHeads;

struct SeqModel {
  std::vector<int32_t> tokens;  // token ids by position
  std::vector<int32_t> slots;   // what each slot of the table must hold
  bool compacted = false;
};

class KvManagerRandomTest {
 public:
  KvManagerRandomTest(uint32_t seed, int num_pages, bool prefix_caching)
      : rng_(seed),
        kv_(testing::make_manager(num_pages, prefix_caching)),
        arena_(num_pages, testing::kMaxTokensPerPage) {
    // Shared stems make prefix hits likely; a small vocabulary makes equal pages likely too.
    for (int s = 0; s < 3; ++s) {
      stems_.emplace_back();
      for (int i = 0; i < 12; ++i) stems_.back().push_back(random_token());
    }
  }

  void run(int num_ops) {
    for (int op = 0; op < num_ops; ++op) {
      SCOPED_TRACE("op " + std::to_string(op));
      const int kind = random_int(0, 9);  // of 10: add 2, grow 5, fork, free, compact 1 each
      if (kind < 2) {
        add();
      } else if (kind < 7) {
        grow();
      } else if (kind == 7) {
        fork();
      } else if (kind == 8) {
        free();
      } else {
        compact();
      }
      check();
      if (::testing::Test::HasFailure()) return;
    }
    while (!live_.empty()) free();
    EXPECT_EQ(kv_->usage().num_used, 0);
    EXPECT_EQ(kv_->usage().num_free + kv_->usage().num_cached, kv_->pool().num_pages());
  }

 private:
  int32_t random_token() { return std::uniform_int_distribution<int32_t>(0, 3)(rng_); }
  int random_int(int low, int high) { return std::uniform_int_distribution<int>(low, high)(rng_); }

  SeqId pick() {
    auto it = live_.begin();
    std::advance(it, random_int(0, static_cast<int>(live_.size()) - 1));
    return it->first;
  }

  void add() {
    if (live_.size() >= 8) return;
    const SeqId seq = next_seq_++;
    SeqModel model;
    const std::vector<int32_t>& stem = stems_[random_int(0, 2)];
    model.tokens.assign(stem.begin(), stem.begin() + random_int(0, 12));
    for (int i = random_int(1, 8); i > 0; --i) model.tokens.push_back(random_token());
    const KvFormatId format = random_int(0, 4) == 0 ? KvFormatId::kF32 : KvFormatId::kBF16;
    kv_->add_sequence(seq, format);
    const int cached = kv_->attach_cached_prefix(seq, model.tokens);
    const int tpp = kv_->page_table(seq).tokens_per_page;
    EXPECT_EQ(cached % tpp, 0);
    EXPECT_LT(cached, static_cast<int>(model.tokens.size()));
    if (!kv_->prefix_cache().enabled()) {
      EXPECT_EQ(cached, 0);
    }
    model.slots.assign(model.tokens.begin(), model.tokens.begin() + cached);
    live_.emplace(seq, std::move(model));
  }

  void grow() {
    if (live_.empty()) return;
    const SeqId seq = pick();
    SeqModel& model = live_.at(seq);
    const int num_new = random_int(1, 6);
    const PageTable before = kv_->page_table(seq);
    // The new slots hold the tokens after the last one in the cache; compacted sequences always
    // take fresh tokens (their slots no longer follow positions).
    const int first = model.compacted ? static_cast<int>(model.tokens.size()) : before.num_tokens;
    while (static_cast<int>(model.tokens.size()) < first + num_new) {
      model.tokens.push_back(random_token());
    }
    const bool fits = kv_->can_allocate(seq, num_new);
    const std::optional<SlotAllocation> allocation =
        kv_->allocate_slots(seq, model.tokens, num_new);
    ASSERT_EQ(allocation.has_value(), fits);
    const PageTable& after = kv_->page_table(seq);
    if (!fits) {
      EXPECT_EQ(after.pages, before.pages);
      EXPECT_EQ(after.num_tokens, before.num_tokens);
      return;
    }
    EXPECT_EQ(static_cast<int>(allocation->new_pages.size()),
              after.num_pages() - before.num_pages());
    arena_.apply(allocation->copies);
    for (int i = 0; i < num_new; ++i) {
      arena_.write(after, before.num_tokens + i, model.tokens[first + i]);
      model.slots.push_back(model.tokens[first + i]);
    }
  }

  void fork() {
    if (live_.empty() || live_.size() >= 8) return;
    const SeqId parent = pick();
    const SeqId child = next_seq_++;
    kv_->fork(parent, child);
    live_.emplace(child, live_.at(parent));
  }

  void free() {
    if (live_.empty()) return;
    const SeqId seq = pick();
    kv_->free(seq);
    live_.erase(seq);
  }

  void compact() {
    if (live_.empty()) return;
    const SeqId seq = pick();
    SeqModel& model = live_.at(seq);
    const int num_slots = static_cast<int>(model.slots.size());
    std::vector<int> kept;
    for (int slot = 0; slot < num_slots; ++slot) {
      if (random_int(0, 2) != 0) kept.push_back(slot);
    }
    const PageTable before = kv_->page_table(seq);
    const int num_kept = static_cast<int>(kept.size());
    const StatusOr<CompactionResult> result =
        kv_->compact(seq, std::vector<int32_t>(kNumHeads, num_kept));
    if (!result.ok()) {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
      EXPECT_EQ(kv_->page_table(seq).pages, before.pages);
      return;
    }
    const PageTable& after = kv_->page_table(seq);
    EXPECT_EQ(static_cast<int>(result->released_pages.size()),
              before.num_pages() - after.num_pages());
    arena_.apply(result->copies);
    arena_.compact(result->source_pages, kept, after);
    std::vector<int32_t> slots;
    slots.reserve(kept.size());
    for (int slot : kept) slots.push_back(model.slots[slot]);
    model.slots = std::move(slots);
    model.compacted = true;
  }

  void check() {
    const PagePool& pool = kv_->pool();
    std::vector<int> refs(pool.num_pages(), 0);
    for (const auto& [seq, model] : live_) {
      const PageTable& table = kv_->page_table(seq);
      ASSERT_EQ(table.num_pages(), pages_for_tokens(table.num_tokens, table.tokens_per_page));
      ASSERT_TRUE(arena_.holds(table, model.slots)) << "sequence " << seq;
      for (PageId page : table.pages) ++refs[page];
    }
    int num_used = 0;
    for (PageId page = 0; page < pool.num_pages(); ++page) {
      ASSERT_EQ(pool.ref_count(page), refs[page]) << "page " << page;
      ASSERT_EQ(pool.is_cached(page), kv_->prefix_cache().hash_of(page).has_value());
      num_used += refs[page] > 0;
    }
    const KvCacheUsage usage = kv_->usage();
    ASSERT_EQ(usage.num_used, num_used);
    ASSERT_EQ(usage.num_used + usage.num_cached + usage.num_free, usage.num_pages);
  }

  std::mt19937 rng_;
  std::unique_ptr<KvManager> kv_;
  FakeArena arena_;
  std::vector<std::vector<int32_t>> stems_;
  std::map<SeqId, SeqModel> live_;
  SeqId next_seq_ = 1;
};

TEST(KvManager, RandomOperationsKeepPagesContentsAndRefCountsExact) {
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const int num_pages = 6 + static_cast<int>(seed % 5) * 6;
    KvManagerRandomTest test(seed, num_pages, /*prefix_caching=*/seed % 4 != 0);
    test.run(1500);
    if (HasFailure()) return;
  }
}

}  // namespace
}  // namespace sieve::kvcache
