// Compaction and page copies on the paged cache: attention over a compacted cache equals
// attention over only the kept tokens (hand-made keep-sets that differ per layer and KV head).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"

namespace sieve::kernels::cpu {
namespace {

constexpr int kLayers = 2, kKvHeads = 2, kHeads = 4, kDim = 8, kTpp = 4;

struct Cache {
  KvCacheLayout layout{kLayers, kKvHeads, kDim, kTpp, 12, DType::kF32, std::nullopt, 0};
  Tensor arena = Tensor::empty(DType::kU8, {static_cast<int64_t>(layout.arena_bytes())});
};

// Dense attention of one query over the given (K, V) rows: softmax(q·Kᵀ/√d)·V in double.
std::vector<double> dense_attention(const float* q, const std::vector<const float*>& k,
                                    const std::vector<const float*>& v) {
  std::vector<double> p(k.size());
  double max = -INFINITY, sum = 0;
  for (size_t j = 0; j < k.size(); ++j) {
    double dot = 0;
    for (int d = 0; d < kDim; ++d) dot += double(q[d]) * k[j][d];
    max = std::max(max, p[j] = dot / std::sqrt(double(kDim)));
  }
  for (double& x : p) sum += (x = std::exp(x - max));
  std::vector<double> out(kDim, 0.0);
  for (size_t j = 0; j < k.size(); ++j) {
    for (int d = 0; d < kDim; ++d) out[d] += p[j] / sum * v[j][d];
  }
  return out;
}

TEST(Compaction, AttentionOverTheCompactedCacheEqualsAttentionOverTheKeptTokens) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    Cache cache;
    const int n = 23;  // tokens in the sequence
    std::vector<int32_t> pages = {7, 2, 9, 0, 5, 11};  // 6 pages x 4 slots
    std::vector<float> k(size_t(n) * kKvHeads * kDim), v(k.size());
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    std::vector<int32_t> slots(n);
    for (int j = 0; j < n; ++j) slots[j] = pages[j / kTpp] * kTpp + j % kTpp;
    for (int l = 0; l < kLayers; ++l) {
      write_kv({TensorView(k.data(), DType::kF32, {n, kKvHeads, kDim}),
                TensorView(v.data(), DType::kF32, {n, kKvHeads, kDim}),
                TensorView(slots.data(), DType::kI32, {n}),
                cache.arena,
                cache.layout,
                l,
                {},
                {}});
    }
    // Keep-sets: a different random subset (always with the last token) per (layer, head).
    const int max_keep = 12;
    std::vector<int32_t> keep(kLayers * kKvHeads * max_keep, -1), counts(kLayers * kKvHeads);
    std::vector<std::vector<int32_t>> kept(kLayers * kKvHeads);
    for (int lh = 0; lh < kLayers * kKvHeads; ++lh) {
      std::vector<int32_t> all(n - 1);
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      const int count = 3 + static_cast<int>(rng() % (max_keep - 3));
      kept[lh].assign(all.begin(), all.begin() + count - 1);
      kept[lh].push_back(n - 1);
      std::sort(kept[lh].begin(), kept[lh].end());
      counts[lh] = count;
      std::copy(kept[lh].begin(), kept[lh].end(), keep.begin() + lh * max_keep);
    }
    compact_kv({cache.arena, cache.layout, TensorView(pages.data(), DType::kI32, {6}),
                TensorView(keep.data(), DType::kI32, {kLayers, kKvHeads, max_keep}),
                TensorView(counts.data(), DType::kI32, {kLayers, kKvHeads})});

    std::vector<float> q(kHeads * kDim);
    for (float& x : q) x = normal(rng);
    // The decode query is the last kept token; slots [count, n) are dead (gap_end = n).
    std::vector<int32_t> qo_indptr = {0, 1}, kv_indptr = {0, 6}, kv_lens = {n}, gap_ends = {n};
    for (int l = 0; l < kLayers; ++l) {
      std::vector<float> out(q.size(), NAN);
      AttentionArgs args;
      args.q = TensorView(q.data(), DType::kF32, {1, kHeads, kDim});
      args.out = TensorView(out.data(), DType::kF32, {1, kHeads, kDim});
      args.arena = cache.arena;
      args.layout = cache.layout;
      args.layer = l;
      args.qo_indptr = TensorView(qo_indptr.data(), DType::kI32, {2});
      args.kv_indptr = TensorView(kv_indptr.data(), DType::kI32, {2});
      args.kv_indices = TensorView(pages.data(), DType::kI32, {6});
      args.kv_lens = TensorView(kv_lens.data(), DType::kI32, {1});
      args.kv_head_lens = TensorView(counts.data(), DType::kI32, {kLayers * kKvHeads});
      args.kv_gap_ends = TensorView(gap_ends.data(), DType::kI32, {1});
      args.scale = 1.0f / std::sqrt(float(kDim));
      attention(args);
      for (int h = 0; h < kHeads; ++h) {
        const int kvh = h / (kHeads / kKvHeads);
        std::vector<const float*> ks, vs;
        for (int32_t j : kept[l * kKvHeads + kvh]) {
          ks.push_back(&k[(size_t(j) * kKvHeads + kvh) * kDim]);
          vs.push_back(&v[(size_t(j) * kKvHeads + kvh) * kDim]);
        }
        const std::vector<double> want = dense_attention(&q[h * kDim], ks, vs);
        for (int d = 0; d < kDim; ++d) ASSERT_NEAR(out[h * kDim + d], want[d], 1e-5) << l << h << d;
      }
    }
  }
}

TEST(PageCopy, CopiesEveryLayersKeysAndValues) {
  Cache cache;
  std::mt19937 rng(4);
  float* data = static_cast<float*>(cache.arena.view().raw());
  for (size_t i = 0; i < cache.layout.arena_bytes() / 4; ++i) data[i] = float(rng() % 1000);
  std::vector<int32_t> src = {3, 8}, dst = {10, 1};
  copy_pages({cache.arena, cache.layout, TensorView(src.data(), DType::kI32, {2}),
              TensorView(dst.data(), DType::kI32, {2})});
  const size_t page = cache.layout.layer_page_bytes();
  auto* bytes = static_cast<std::byte*>(cache.arena.view().raw());
  for (int l = 0; l < kLayers; ++l) {
    for (int i = 0; i < 2; ++i) {
      const size_t base = size_t(l) * cache.layout.num_pages;
      EXPECT_EQ(std::memcmp(bytes + (base + dst[i]) * page, bytes + (base + src[i]) * page, page), 0);
    }
  }
}

}  // namespace
}  // namespace sieve::kernels::cpu
