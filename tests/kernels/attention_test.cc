// Paged attention against a dense reference computed here from the same keys and values laid out
// contiguously: several sequences, GQA, chunked prefill over history, decode, shuffled pages and
// compacted sequences (per-(layer, KV head) survivors, a dead gap, then appended tokens).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"

namespace sieve::kernels::cpu {
namespace {

struct Sequence {
  int kv_len;  // slots including this step's tokens
  int q_len;   // this step's tokens
};

struct Case {
  std::vector<Sequence> seqs;
  int num_heads, num_kv_heads, head_dim, tokens_per_page, num_layers, layer;
  bool per_head_lens;
};

class PagedAttention : public ::testing::TestWithParam<uint32_t> {};

void run_case(const Case& c, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const int num_seqs = static_cast<int>(c.seqs.size());
  // Pages: every sequence gets ceil(kv_len / tpp) pages drawn from a shuffled pool.
  int total_pages = 0;
  for (const auto& s : c.seqs) total_pages += (s.kv_len + c.tokens_per_page - 1) / c.tokens_per_page;
  KvCacheLayout layout{c.num_layers, c.num_kv_heads, c.head_dim, c.tokens_per_page, total_pages + 3,
                       DType::kF32};
  Tensor arena = Tensor::empty(DType::kU8, {static_cast<int64_t>(layout.arena_bytes())});
  std::fill_n(static_cast<float*>(arena.view().raw()), layout.arena_bytes() / 4, NAN);
  std::vector<int32_t> pool(layout.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);

  std::vector<int32_t> qo_indptr{0}, kv_indptr{0}, kv_indices, kv_lens, head_lens, gap_ends;
  // Dense K/V per sequence: [kv_len][kv_heads][dim].
  std::vector<std::vector<float>> dense_k(num_seqs), dense_v(num_seqs);
  int next_page = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const Sequence& seq = c.seqs[s];
    qo_indptr.push_back(qo_indptr.back() + seq.q_len);
    const int pages = (seq.kv_len + c.tokens_per_page - 1) / c.tokens_per_page;
    for (int p = 0; p < pages; ++p) kv_indices.push_back(pool[next_page++]);
    kv_indptr.push_back(static_cast<int32_t>(kv_indices.size()));
    kv_lens.push_back(seq.kv_len);
    dense_k[s].resize(size_t(seq.kv_len) * c.num_kv_heads * c.head_dim);
    dense_v[s].resize(dense_k[s].size());
    for (float& x : dense_k[s]) x = normal(rng);
    for (float& x : dense_v[s]) x = normal(rng);
    // Compacted: head survivors [0, head_len), dead [head_len, gap_end), then appended slots up
    // to kv_len, which hold this step's tokens.
    const int history = seq.kv_len - seq.q_len;
    const int gap_end = c.per_head_lens ? history - static_cast<int>(rng() % (history / 2 + 1))
                                        : seq.kv_len;
    gap_ends.push_back(gap_end);
    for (int l = 0; l < c.num_layers; ++l) {
      for (int h = 0; h < c.num_kv_heads; ++h) {
        head_lens.push_back(c.per_head_lens ? static_cast<int>(rng() % (gap_end + 1)) : seq.kv_len);
      }
    }
  }
  // Write every slot of every sequence through write_kv (one call per sequence).
  for (int s = 0; s < num_seqs; ++s) {
    const int n = c.seqs[s].kv_len;
    std::vector<int32_t> slots(n);
    for (int j = 0; j < n; ++j) {
      slots[j] = kv_indices[kv_indptr[s] + j / c.tokens_per_page] * c.tokens_per_page +
                 j % c.tokens_per_page;
    }
    write_kv({TensorView(dense_k[s].data(), DType::kF32, {n, c.num_kv_heads, c.head_dim}),
              TensorView(dense_v[s].data(), DType::kF32, {n, c.num_kv_heads, c.head_dim}),
              TensorView(slots.data(), DType::kI32, {n}), arena, layout, c.layer});
  }
  const int num_tokens = qo_indptr.back();
  std::vector<float> q(size_t(num_tokens) * c.num_heads * c.head_dim);
  for (float& x : q) x = normal(rng);
  std::vector<float> out(q.size(), NAN), out_ref(q.size(), NAN);
  AttentionArgs args;
  args.q = TensorView(q.data(), DType::kF32, {num_tokens, c.num_heads, c.head_dim});
  args.arena = arena;
  args.layout = layout;
  args.layer = c.layer;
  args.qo_indptr = TensorView(qo_indptr.data(), DType::kI32, {num_seqs + 1});
  args.kv_indptr = TensorView(kv_indptr.data(), DType::kI32, {num_seqs + 1});
  args.kv_indices = TensorView(kv_indices.data(), DType::kI32, {int64_t(kv_indices.size())});
  args.kv_lens = TensorView(kv_lens.data(), DType::kI32, {num_seqs});
  if (c.per_head_lens) {
    args.kv_head_lens = TensorView(head_lens.data(), DType::kI32, {int64_t(head_lens.size())});
    args.kv_gap_ends = TensorView(gap_ends.data(), DType::kI32, {num_seqs});
  }
  args.scale = 1.0f / std::sqrt(float(c.head_dim));
  args.out = TensorView(out.data(), DType::kF32, {num_tokens, c.num_heads, c.head_dim});
  attention(args);
  args.out = TensorView(out_ref.data(), DType::kF32, {num_tokens, c.num_heads, c.head_dim});
  ref::attention(args);

  const int group = c.num_heads / c.num_kv_heads;
  for (int s = 0; s < num_seqs; ++s) {
    const Sequence& seq = c.seqs[s];
    for (int i = 0; i < seq.q_len; ++i) {
      const int t = qo_indptr[s] + i;
      for (int h = 0; h < c.num_heads; ++h) {
        const int kvh = h / group;
        const int prefix = head_lens[(s * c.num_layers + c.layer) * c.num_kv_heads + kvh];
        const int limit = seq.kv_len - seq.q_len + i + 1;
        std::vector<int> valid;
        for (int j = 0; j < limit; ++j) {
          if (j < prefix || j >= gap_ends[s]) valid.push_back(j);
        }
        const float* qv = &q[(size_t(t) * c.num_heads + h) * c.head_dim];
        std::vector<double> p(valid.size());
        double max = -INFINITY;
        for (size_t vi = 0; vi < valid.size(); ++vi) {
          const int j = valid[vi];
          double dot = 0;
          for (int d = 0; d < c.head_dim; ++d) {
            dot += double(qv[d]) * dense_k[s][(size_t(j) * c.num_kv_heads + kvh) * c.head_dim + d];
          }
          p[vi] = dot / std::sqrt(double(c.head_dim));
          max = std::max(max, p[vi]);
        }
        double sum = 0;
        for (double& x : p) sum += (x = std::exp(x - max));
        for (int d = 0; d < c.head_dim; ++d) {
          double expect = 0;
          for (size_t vi = 0; vi < valid.size(); ++vi) {
            expect += p[vi] / sum *
                      dense_v[s][(size_t(valid[vi]) * c.num_kv_heads + kvh) * c.head_dim + d];
          }
          const size_t o = (size_t(t) * c.num_heads + h) * c.head_dim + d;
          ASSERT_NEAR(out[o], expect, 1e-4) << "seq " << s << " row " << i << " head " << h;
          ASSERT_EQ(out[o], out_ref[o]);
        }
      }
    }
  }
}

TEST_P(PagedAttention, MatchesDenseReference) {
  const uint32_t seed = GetParam();
  // A decode, a first prefill chunk, a later chunk over history, and a one-token sequence.
  Case c{{{37, 1}, {20, 20}, {70, 13}, {1, 1}}, 8, 2, 16, 16, 3, 1, false};
  run_case(c, seed);
}

TEST_P(PagedAttention, SkipsTheDeadSlotsOfCompactedSequences) {
  Case c{{{40, 1}, {33, 3}, {17, 1}}, 6, 3, 8, 4, 2, 0, true};
  run_case(c, GetParam());
}

TEST_P(PagedAttention, HandlesMultiQueryAndOddPageSizes) {
  Case c{{{50, 7}, {9, 1}}, 4, 1, 32, 5, 1, 0, false};
  run_case(c, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Seeds, PagedAttention, ::testing::Values(1u, 2u, 3u, 4u));

}  // namespace
}  // namespace sieve::kernels::cpu
