#pragma once
// Shared by the kvcache and scheduler tests: a small model geometry, a KvManager over it, and a
// helper that plays one engine step of one sequence against a FakeArena.

#include <gtest/gtest.h>

#include <memory>
#include <numeric>
#include <vector>

#include "kvcache/kv_manager.h"
#include "tests/kvcache/fake_arena.h"

namespace sieve::kvcache::testing {

// bf16: 2 layers x 2 KV heads x head_dim 4 x (K, V) x 2 bytes = 64 bytes per token, so a
// 256-byte page holds 4 bf16 tokens or 2 f32 tokens.
inline constexpr KvGeometry kGeometry{2, 2, 4};
inline constexpr size_t kPageBytes = 256;
inline constexpr int kMaxTokensPerPage = 4;
inline constexpr int kNumHeads = kGeometry.num_layers * kGeometry.num_kv_heads;

inline std::unique_ptr<KvManager> make_manager(int num_pages, bool prefix_caching = true,
                                               size_t page_bytes = kPageBytes) {
  return KvManager::create(
             KvManagerConfig{num_pages, page_bytes, kGeometry, "test-model", prefix_caching})
      .value();
}

// n consecutive token ids from `first`.
inline std::vector<int32_t> iota_tokens(int n, int32_t first = 100) {
  std::vector<int32_t> tokens(n);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

// Allocates the slots of tokens [num_tokens, num_tokens + n) of `seq` and writes them, as a step
// of the engine would.
inline void run_tokens(KvManager& kv, FakeArena& arena, SeqId seq,
                       const std::vector<int32_t>& tokens, int n) {
  const int first = kv.num_tokens(seq);
  const std::optional<SlotAllocation> allocation = kv.allocate_slots(seq, tokens, n);
  ASSERT_TRUE(allocation.has_value());
  arena.apply(allocation->copies);
  for (int i = first; i < first + n; ++i) arena.write(kv.page_table(seq), i, tokens[i]);
}

}  // namespace sieve::kvcache::testing
