// Paged attention against a dense reference computed here from the same keys and values laid out
// contiguously: several sequences, GQA, chunked prefill over history, decode, shuffled pages and
// compacted sequences (per-(layer, KV head) survivors, a dead gap, then appended tokens). The
// compression hooks (per-slot logit bias, selected slots) against sequences built to be
// equivalent: a slot duplicated w times, a sequence without the dropped or unselected slots.

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
  KvCacheLayout layout{c.num_layers,    c.num_kv_heads, c.head_dim,   c.tokens_per_page,
                       total_pages + 3, DType::kF32,    std::nullopt, 0};
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
              TensorView(slots.data(), DType::kI32, {n}),
              arena,
              layout,
              c.layer,
              {},
              {}});
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

// One sequence for the hook tests, from explicit dense keys and values, so a test can build a
// second sequence the hooks must be equivalent to.
struct HookSeq {
  int kv_len = 0, q_len = 0;
  std::vector<float> k, v;         // [kv_len][num_kv_heads][head_dim]
  std::vector<int32_t> head_lens;  // this layer's survivors per KV head (empty: not compacted)
  int gap_end = 0;                 // with head_lens
  std::vector<std::vector<int32_t>> selected;  // per KV head, virtual slots (empty: all)
  std::vector<float> bias;                     // [kv_len][num_kv_heads] (empty: no bias)

  // The physical slots a row may read below its causal limit, in virtual order.
  std::vector<int> valid_slots(int kv_head, int limit) const {
    std::vector<int> valid;
    for (int j = 0; j < limit; ++j) {
      if (head_lens.empty() || j < head_lens[kv_head] || j >= gap_end) valid.push_back(j);
    }
    return valid;
  }
};

HookSeq lengths(int kv_len, int q_len) {
  HookSeq s;
  s.kv_len = kv_len;
  s.q_len = q_len;
  return s;
}

struct HookBatch {
  int num_heads = 0, num_kv_heads = 0, head_dim = 0, tokens_per_page = 0;
  std::vector<HookSeq> seqs;
  std::vector<float> q;  // [tokens][num_heads][head_dim]

  int num_tokens() const {
    int n = 0;
    for (const HookSeq& s : seqs) n += s.q_len;
    return n;
  }
  // Fresh keys, values and queries (normal) for sequences given their lengths.
  void randomize(std::mt19937& rng) {
    std::normal_distribution<float> normal;
    for (HookSeq& s : seqs) {
      s.k.resize(size_t(s.kv_len) * num_kv_heads * head_dim);
      s.v.resize(s.k.size());
      for (float& x : s.k) x = normal(rng);
      for (float& x : s.v) x = normal(rng);
    }
    q.resize(size_t(num_tokens()) * num_heads * head_dim);
    for (float& x : q) x = normal(rng);
  }
};

// Pages the batch (shuffled pages of layer 1 of 2, NaN everywhere no sequence writes; the bias of
// sequences without one stays NaN) and runs attention and ref::attention, which must agree
// exactly; returns the output rows.
std::vector<float> run_hooks(const HookBatch& b, std::mt19937& rng) {
  const int num_seqs = static_cast<int>(b.seqs.size()), tpp = b.tokens_per_page;
  const int num_layers = 2, layer = 1;
  int total_pages = 0;
  for (const HookSeq& s : b.seqs) total_pages += (s.kv_len + tpp - 1) / tpp;
  const KvCacheLayout layout{num_layers,      b.num_kv_heads, b.head_dim,   tpp,
                             total_pages + 2, DType::kF32,    std::nullopt, 0};
  Tensor arena = Tensor::empty(DType::kU8, {static_cast<int64_t>(layout.arena_bytes())});
  std::fill_n(static_cast<float*>(arena.view().raw()), layout.arena_bytes() / 4, NAN);
  std::vector<float> bias(size_t(num_layers) * layout.num_pages * b.num_kv_heads * tpp, NAN);
  std::vector<int32_t> pool(layout.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);

  std::vector<int32_t> qo_indptr{0}, kv_indptr{0}, kv_indices, kv_lens, head_lens, gap_ends;
  std::vector<int32_t> bias_seqs, selected_indptr{0}, selected_slots;
  bool compacted = false, biased = false, selecting = false;
  for (const HookSeq& s : b.seqs) {
    compacted |= !s.head_lens.empty();
    biased |= !s.bias.empty();
    selecting |= !s.selected.empty();
  }
  int next_page = 0;
  for (int si = 0; si < num_seqs; ++si) {
    const HookSeq& s = b.seqs[si];
    qo_indptr.push_back(qo_indptr.back() + s.q_len);
    const int first_page = static_cast<int>(kv_indices.size());
    for (int p = 0; p < (s.kv_len + tpp - 1) / tpp; ++p) kv_indices.push_back(pool[next_page++]);
    kv_indptr.push_back(static_cast<int32_t>(kv_indices.size()));
    kv_lens.push_back(s.kv_len);
    std::vector<int32_t> slots(s.kv_len);
    for (int j = 0; j < s.kv_len; ++j) {
      slots[j] = kv_indices[first_page + j / tpp] * tpp + j % tpp;
      for (int h = 0; h < b.num_kv_heads && !s.bias.empty(); ++h) {
        bias[((size_t(layer) * layout.num_pages + kv_indices[first_page + j / tpp]) *
                  b.num_kv_heads +
              h) * tpp +
             j % tpp] = s.bias[size_t(j) * b.num_kv_heads + h];
      }
    }
    write_kv({TensorView(const_cast<float*>(s.k.data()), DType::kF32,
                         {s.kv_len, b.num_kv_heads, b.head_dim}),
              TensorView(const_cast<float*>(s.v.data()), DType::kF32,
                         {s.kv_len, b.num_kv_heads, b.head_dim}),
              TensorView(slots.data(), DType::kI32, {s.kv_len}),
              arena,
              layout,
              layer,
              {},
              {}});
    gap_ends.push_back(s.head_lens.empty() ? s.kv_len : s.gap_end);
    for (int l = 0; l < num_layers; ++l) {
      for (int h = 0; h < b.num_kv_heads; ++h) {
        head_lens.push_back(s.head_lens.empty() ? s.kv_len : s.head_lens[h]);
      }
    }
    bias_seqs.push_back(s.bias.empty() ? 0 : 1);
    for (int h = 0; h < b.num_kv_heads; ++h) {
      if (!s.selected.empty()) {
        selected_slots.insert(selected_slots.end(), s.selected[h].begin(), s.selected[h].end());
      }
      selected_indptr.push_back(static_cast<int32_t>(selected_slots.size()));
    }
  }
  auto i32 = [](std::vector<int32_t>& v) {
    return TensorView(v.data(), DType::kI32, {static_cast<int64_t>(v.size())});
  };
  const int num_tokens = b.num_tokens();
  std::vector<float> out(b.q.size(), NAN), out_ref(b.q.size(), NAN);
  AttentionArgs args;
  args.q = TensorView(const_cast<float*>(b.q.data()), DType::kF32,
                      {num_tokens, b.num_heads, b.head_dim});
  args.arena = arena;
  args.layout = layout;
  args.layer = layer;
  args.qo_indptr = i32(qo_indptr);
  args.kv_indptr = i32(kv_indptr);
  args.kv_indices = i32(kv_indices);
  args.kv_lens = i32(kv_lens);
  if (compacted) {
    args.kv_head_lens = i32(head_lens);
    args.kv_gap_ends = i32(gap_ends);
  }
  if (biased) {
    args.slot_bias = TensorView(bias.data(), DType::kF32,
                                {num_layers, layout.num_pages, b.num_kv_heads, tpp});
    args.slot_bias_seqs = i32(bias_seqs);
  }
  if (selecting) {
    args.selected_indptr = i32(selected_indptr);
    args.selected_slots = i32(selected_slots);
  }
  args.scale = 1.0f / std::sqrt(float(b.head_dim));
  args.out = TensorView(out.data(), DType::kF32, {num_tokens, b.num_heads, b.head_dim});
  attention(args);
  args.out = TensorView(out_ref.data(), DType::kF32, {num_tokens, b.num_heads, b.head_dim});
  ref::attention(args);
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i], out_ref[i]) << "the parallel path differs from ref:: at " << i;
  }
  return out;
}

// softmax(q·Kᵀ/√d + bias)·V over the selected valid slots below each row's causal limit, in
// double, from the dense arrays alone.
std::vector<double> dense_hooks_reference(const HookBatch& b) {
  const int group = b.num_heads / b.num_kv_heads, dim = b.head_dim;
  std::vector<double> out(b.q.size(), 0.0);
  int t = 0;
  for (const HookSeq& s : b.seqs) {
    for (int i = 0; i < s.q_len; ++i, ++t) {
      for (int h = 0; h < b.num_heads; ++h) {
        const int kvh = h / group;
        const std::vector<int> valid = s.valid_slots(kvh, s.kv_len - s.q_len + i + 1);
        std::vector<int> read;
        if (s.selected.empty() || s.selected[kvh].empty()) {
          read = valid;
        } else {
          for (int v : s.selected[kvh]) {
            if (v < static_cast<int>(valid.size())) read.push_back(valid[v]);
          }
        }
        const float* qv = &b.q[(size_t(t) * b.num_heads + h) * dim];
        std::vector<double> p(read.size());
        double max = -INFINITY;
        for (size_t r = 0; r < read.size(); ++r) {
          double dot = 0;
          for (int d = 0; d < dim; ++d) {
            dot += double(qv[d]) * s.k[(size_t(read[r]) * b.num_kv_heads + kvh) * dim + d];
          }
          p[r] = dot / std::sqrt(double(dim)) +
                 (s.bias.empty() ? 0.0 : s.bias[size_t(read[r]) * b.num_kv_heads + kvh]);
          max = std::max(max, p[r]);
        }
        if (max == -INFINITY) continue;  // nothing visible: zeros
        double sum = 0;
        for (double& x : p) sum += (x = std::exp(x - max));
        for (size_t r = 0; r < read.size(); ++r) {
          for (int d = 0; d < dim; ++d) {
            out[(size_t(t) * b.num_heads + h) * dim + d] +=
                p[r] / sum * s.v[(size_t(read[r]) * b.num_kv_heads + kvh) * dim + d];
          }
        }
      }
    }
  }
  return out;
}

void expect_near_reference(const HookBatch& b, const std::vector<float>& out) {
  const std::vector<double> want = dense_hooks_reference(b);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], want[i], 1e-4) << "at " << i;
}

// Copies the key and value rows of slot `from` of `src` (every KV head) to slot `to` of `dst`.
void copy_slot(const HookBatch& b, const HookSeq& src, int from, HookSeq& dst, int to) {
  const size_t row = size_t(b.num_kv_heads) * b.head_dim;
  std::copy_n(src.k.begin() + from * row, row, dst.k.begin() + to * row);
  std::copy_n(src.v.begin() + from * row, row, dst.v.begin() + to * row);
}

// Expects the rows of sequences `a` and `b` (same q_len, the same queries) to match.
void expect_same_rows(const HookBatch& batch, const std::vector<float>& out, int a, int b,
                      double tolerance) {
  int first[2] = {0, 0};
  for (int s = 0; s < std::max(a, b); ++s) {
    if (s < a) first[0] += batch.seqs[s].q_len;
    if (s < b) first[1] += batch.seqs[s].q_len;
  }
  const size_t row = size_t(batch.num_heads) * batch.head_dim;
  for (size_t i = 0; i < batch.seqs[a].q_len * row; ++i) {
    ASSERT_NEAR(out[first[0] * row + i], out[first[1] * row + i], tolerance)
        << "sequences " << a << " and " << b << " at " << i;
  }
}

// Gives sequence `b` the queries of sequence `a` (same q_len).
void share_queries(HookBatch& batch, int a, int b) {
  int first[2] = {0, 0};
  for (int s = 0; s < std::max(a, b); ++s) {
    if (s < a) first[0] += batch.seqs[s].q_len;
    if (s < b) first[1] += batch.seqs[s].q_len;
  }
  const size_t row = size_t(batch.num_heads) * batch.head_dim;
  std::copy_n(batch.q.begin() + first[0] * row, batch.seqs[a].q_len * row,
              batch.q.begin() + first[1] * row);
}

class AttentionHooks : public ::testing::TestWithParam<uint32_t> {};

// A slot with bias log w weighs exactly as w copies of it: sequence 2k carries weights on its
// history, sequence 2k + 1 holds that history with each slot repeated w times and no bias (and
// reads none: its bias entries stay NaN). A decode row and a prefill chunk over the history.
TEST_P(AttentionHooks, BiasOfLogWWeighsAsWCopiesOfTheSlot) {
  SCOPED_TRACE(::testing::Message() << "seed " << GetParam());
  std::mt19937 rng(GetParam());
  HookBatch b{8, 2, 16, 5, {}, {}};
  const int q_lens[] = {1, 6};
  for (const int q_len : q_lens) {
    const int history = 23;
    std::vector<int> weights(history);
    for (int& w : weights) w = 1 + static_cast<int>(rng() % 3);
    const int expanded = std::accumulate(weights.begin(), weights.end(), 0);
    b.seqs.push_back(lengths(history + q_len, q_len));
    b.seqs.push_back(lengths(expanded + q_len, q_len));
    HookSeq& weighted = b.seqs[b.seqs.size() - 2];
    weighted.bias.assign(size_t(weighted.kv_len) * b.num_kv_heads, 0.0f);
    for (int j = 0; j < history; ++j) {
      for (int h = 0; h < b.num_kv_heads; ++h) {
        weighted.bias[j * b.num_kv_heads + h] = std::log(static_cast<float>(weights[j]));
      }
    }
  }
  b.randomize(rng);
  for (size_t pair = 0; pair < b.seqs.size(); pair += 2) {
    const HookSeq& weighted = b.seqs[pair];
    HookSeq& copies = b.seqs[pair + 1];
    int to = 0;
    const int history = weighted.kv_len - weighted.q_len;
    for (int j = 0; j < history; ++j) {
      const int w = static_cast<int>(std::lround(std::exp(weighted.bias[j * b.num_kv_heads])));
      for (int c = 0; c < w; ++c) copy_slot(b, weighted, j, copies, to++);
    }
    for (int j = history; j < weighted.kv_len; ++j) copy_slot(b, weighted, j, copies, to++);
    ASSERT_EQ(to, copies.kv_len);
    share_queries(b, static_cast<int>(pair), static_cast<int>(pair + 1));
  }
  const std::vector<float> out = run_hooks(b, rng);
  expect_same_rows(b, out, 0, 1, 1e-5);
  expect_same_rows(b, out, 2, 3, 1e-5);
  expect_near_reference(b, out);
}

// A -inf (or very negative) bias drops the slot: the same as a sequence without it. A sequence
// whose every slot is dropped gets zeros.
TEST_P(AttentionHooks, MinusInfinityBiasDropsTheSlot) {
  SCOPED_TRACE(::testing::Message() << "seed " << GetParam());
  std::mt19937 rng(GetParam() + 10);
  HookBatch b{4, 2, 32, 4, {}, {}};
  const int len = 30;
  std::vector<bool> drop(len);
  int kept = 0;
  for (int j = 0; j < len; ++j) {
    drop[j] = j < len - 1 && rng() % 3 == 0;  // never this step's own token
    kept += !drop[j];
  }
  b.seqs = {lengths(len, 1), lengths(kept, 1), lengths(3, 1)};
  b.randomize(rng);
  HookSeq& dropped = b.seqs[0];
  dropped.bias.assign(size_t(len) * b.num_kv_heads, 0.0f);
  for (int j = 0, to = 0; j < len; ++j) {
    for (int h = 0; h < b.num_kv_heads; ++h) {
      dropped.bias[j * b.num_kv_heads + h] = !drop[j] ? 0.0f : j % 2 ? -INFINITY : -1e30f;
    }
    if (!drop[j]) copy_slot(b, dropped, j, b.seqs[1], to++);
  }
  b.seqs[2].bias.assign(3 * b.num_kv_heads, -INFINITY);
  share_queries(b, 0, 1);
  const std::vector<float> out = run_hooks(b, rng);
  expect_same_rows(b, out, 0, 1, 1e-5);
  const size_t row = size_t(b.num_heads) * b.head_dim;
  for (size_t i = 0; i < row; ++i) ASSERT_EQ(out[2 * row + i], 0.0f);
}

// A decode row over a selection (a different subset per KV head) equals the row over a sequence
// that holds only those slots; a sequence with only empty lists reads all its slots.
TEST_P(AttentionHooks, SelectionEqualsTheSequenceOfItsSlots) {
  SCOPED_TRACE(::testing::Message() << "seed " << GetParam());
  std::mt19937 rng(GetParam() + 20);
  HookBatch b{12, 3, 16, 8, {}, {}};
  const int len = 70, count = 19;
  b.seqs = {lengths(len, 1), lengths(count, 1), lengths(41, 1)};
  b.randomize(rng);
  HookSeq& sparse = b.seqs[0];
  sparse.selected.resize(b.num_kv_heads);
  b.seqs[2].selected.resize(b.num_kv_heads);  // empty lists: all slots
  for (int h = 0; h < b.num_kv_heads; ++h) {
    std::vector<int32_t> all(len);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    sparse.selected[h].assign(all.begin(), all.begin() + count);
    std::sort(sparse.selected[h].begin(), sparse.selected[h].end());
    for (int i = 0; i < count; ++i) {
      const size_t from = (size_t(sparse.selected[h][i]) * b.num_kv_heads + h) * b.head_dim;
      const size_t to = (size_t(i) * b.num_kv_heads + h) * b.head_dim;
      std::copy_n(sparse.k.begin() + from, b.head_dim, b.seqs[1].k.begin() + to);
      std::copy_n(sparse.v.begin() + from, b.head_dim, b.seqs[1].v.begin() + to);
    }
  }
  share_queries(b, 0, 1);
  const std::vector<float> out = run_hooks(b, rng);
  expect_same_rows(b, out, 0, 1, 1e-5);
  expect_near_reference(b, out);
}

// Prefill rows over a selection: row i reads only the selected slots below its own causal limit
// (history and this chunk's earlier tokens alike).
TEST_P(AttentionHooks, SelectionKeepsEachPrefillRowsCausalLimit) {
  SCOPED_TRACE(::testing::Message() << "seed " << GetParam());
  std::mt19937 rng(GetParam() + 30);
  HookBatch b{8, 2, 16, 16, {}, {}};
  b.seqs = {lengths(30 + 8, 8), lengths(12, 12)};
  b.randomize(rng);
  for (HookSeq& s : b.seqs) {
    s.selected.resize(b.num_kv_heads);
    for (int h = 0; h < b.num_kv_heads; ++h) {
      for (int j = 0; j < s.kv_len; ++j) {
        if (rng() % 2) s.selected[h].push_back(j);
      }
    }
  }
  expect_near_reference(b, run_hooks(b, rng));
}

// Both hooks on compacted sequences: per-head survivors, a dead gap, the tokens appended since;
// selections in virtual numbering, a random bias per (slot, KV head).
TEST_P(AttentionHooks, BothHooksOnCompactedHeads) {
  SCOPED_TRACE(::testing::Message() << "seed " << GetParam());
  std::mt19937 rng(GetParam() + 40);
  std::uniform_real_distribution<float> uniform(-2.0f, 1.0f);
  HookBatch b{6, 3, 8, 4, {}, {}};
  b.seqs = {lengths(40, 1), lengths(33, 3), lengths(25, 1), lengths(19, 5)};
  b.randomize(rng);
  for (size_t si = 0; si < b.seqs.size(); ++si) {
    HookSeq& s = b.seqs[si];
    const int history = s.kv_len - s.q_len;
    s.gap_end = history - static_cast<int>(rng() % (history / 2 + 1));
    for (int h = 0; h < b.num_kv_heads; ++h) {
      s.head_lens.push_back(static_cast<int>(rng() % (s.gap_end + 1)));
    }
    if (si != 2) {  // sequence 2 reads no bias
      s.bias.resize(size_t(s.kv_len) * b.num_kv_heads);
      for (float& x : s.bias) x = uniform(rng);
    }
    if (si != 3) {  // sequence 3 selects nothing
      s.selected.resize(b.num_kv_heads);
      for (int h = 0; h < b.num_kv_heads; ++h) {
        const int valid = static_cast<int>(s.valid_slots(h, s.kv_len).size());
        for (int v = 0; v < valid; ++v) {
          if (h != 1 && rng() % 3 != 0) s.selected[h].push_back(v);  // head 1: all slots
        }
      }
    }
  }
  expect_near_reference(b, run_hooks(b, rng));
}

// A malformed selection is a programming error of the policy that built it: a loud failure
// that names the sequence, the head and the slot.
TEST(AttentionHooksDeathTest, RejectsUnsortedOrOutOfRangeSelections) {
  std::mt19937 rng(7);
  HookBatch b{2, 1, 8, 4, {}, {}};
  b.seqs = {lengths(10, 1)};
  b.randomize(rng);
  b.seqs[0].selected = {{1, 5, 3}};
  EXPECT_DEATH(run_hooks(b, rng), "sequence 0, KV head 0 must ascend strictly within \\[0, 10\\): "
                                  "slot 3 at position 2");
  b.seqs[0].selected = {{2, 2}};
  EXPECT_DEATH(run_hooks(b, rng), "slot 2 at position 1");
  b.seqs[0].selected = {{4, 10}};
  EXPECT_DEATH(run_hooks(b, rng), "slot 10 at position 1");
  b.seqs[0].selected = {{-1}};
  EXPECT_DEATH(run_hooks(b, rng), "slot -1 at position 0");
  // Compacted: the valid length counts survivors and the slots after the gap only.
  b.seqs[0].head_lens = {3};
  b.seqs[0].gap_end = 7;
  b.seqs[0].selected = {{0, 6}};
  EXPECT_DEATH(run_hooks(b, rng), "within \\[0, 6\\): slot 6");
}

INSTANTIATE_TEST_SUITE_P(Seeds, AttentionHooks, ::testing::Values(1u, 2u, 3u));

}  // namespace
}  // namespace sieve::kernels::cpu
