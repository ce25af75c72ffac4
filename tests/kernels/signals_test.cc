// Compression signals (kv_signals, copy_rows) against dense references computed here: a paged,
// shuffled cache, GQA, a compacted sequence whose heads keep different numbers of slots, and
// slots left out of the window's softmax (KVzip's reconstruction) with a running max over
// windows.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"

namespace sieve::kernels::cpu {
namespace {

struct SignalCase {
  int layers, kv_heads, group, head_dim, tpp, num_tokens, num_queries;
  bool compacted;
  bool skip = false;  // leave two ranges out of the softmax
};

void run_case(const SignalCase& c, uint32_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "seed " << seed << " compacted " << c.compacted << " skip " << c.skip);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const int heads = c.kv_heads * c.group;
  const int pages = (c.num_tokens + c.tpp - 1) / c.tpp;
  KvCacheLayout layout{c.layers,  c.kv_heads,  c.head_dim,   c.tpp,
                       pages + 2, DType::kF32, std::nullopt, 0};
  Tensor arena = Tensor::empty(DType::kU8, {static_cast<int64_t>(layout.arena_bytes())});
  std::vector<int32_t> table(layout.num_pages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  table.resize(pages);
  // Physical slots: K and V of every (layer, head, slot), written through the page table.
  auto slot_ptr = [&](int l, int kv, int h, int j) {
    const size_t offset =
        (static_cast<size_t>(l) * layout.num_pages + table[j / c.tpp]) * layout.layer_page_bytes() +
        ((static_cast<size_t>(kv) * c.kv_heads + h) * c.tpp + j % c.tpp) * c.head_dim *
            sizeof(float);
    return reinterpret_cast<float*>(static_cast<std::byte*>(arena.view().raw()) + offset);
  };
  for (int l = 0; l < c.layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < c.kv_heads; ++h) {
        for (int j = 0; j < c.num_tokens; ++j) {
          float* p = slot_ptr(l, kv, h, j);
          for (int d = 0; d < c.head_dim; ++d) p[d] = normal(rng);
        }
      }
    }
  }
  // Compacted: head (l, h) keeps [0, head_len) and [gap_end, num_tokens).
  const int gap_end = c.compacted ? c.num_tokens - c.num_queries - 3 : c.num_tokens;
  std::vector<int32_t> head_lens;
  for (int r = 0; r < c.layers * c.kv_heads; ++r) {
    head_lens.push_back(c.compacted ? static_cast<int>(rng() % (gap_end + 1)) : 0);
  }
  auto valid = [&](int l, int h) {
    return c.compacted ? head_lens[l * c.kv_heads + h] + c.num_tokens - gap_end : c.num_tokens;
  };
  auto physical = [&](int l, int h, int v) {
    const int packed = c.compacted ? head_lens[l * c.kv_heads + h] : c.num_tokens;
    return v < packed ? v : gap_end + (v - packed);
  };
  // Queries [layers, rows, heads, dim] with a row stride wider than the window (a ring).
  const int rows = c.num_queries + 5;
  std::vector<float> queries(static_cast<size_t>(c.layers) * rows * heads * c.head_dim);
  for (float& x : queries) x = normal(rng);
  const int stride = c.num_tokens;
  std::vector<float> window(size_t(c.layers) * heads * stride, -1),
      group_max(size_t(c.layers) * c.kv_heads * stride, -1), key_norms(group_max),
      value_norms(group_max), anchor(group_max);
  // The running max starts from earlier windows' values: some slots already hold more than
  // this window gives them.
  std::vector<float> running_max(group_max.size());
  std::uniform_real_distribution<float> earlier(0.0f, 0.08f);
  for (float& x : running_max) x = rng() % 3 == 0 ? earlier(rng) : 0.0f;
  const std::vector<float> running_before = running_max;
  // Skipped ranges lie before every head's window (a compacted head keeps at least the
  // num_queries + 3 slots appended since its compaction).
  const int skip[2][2] = {{c.compacted ? 1 : 2, c.compacted ? 2 : 5},
                          {c.compacted ? 2 : 9, c.compacted ? 3 : 15}};
  auto skipped = [&](int v) {
    return c.skip && ((v >= skip[0][0] && v < skip[0][1]) || (v >= skip[1][0] && v < skip[1][1]));
  };
  KvSignalArgs a;
  a.arena = arena.view();
  a.layout = layout;
  a.page_table = TensorView(table.data(), DType::kI32, {pages});
  a.num_tokens = c.num_tokens;
  if (c.compacted) {
    a.head_lens =
        TensorView(head_lens.data(), DType::kI32, {static_cast<int64_t>(head_lens.size())});
    a.gap_end = gap_end;
  }
  a.queries = TensorView(queries.data(), DType::kF32, {c.layers, rows, heads, c.head_dim})
                  .slice(1, 0, c.num_queries);
  a.num_queries = c.num_queries;
  a.scale = 0.125f;
  a.slot_stride = stride;
  a.window_attention = TensorView(window.data(), DType::kF32, {c.layers, heads, stride});
  a.window_attention_group_max =
      TensorView(group_max.data(), DType::kF32, {c.layers, c.kv_heads, stride});
  a.key_norms = TensorView(key_norms.data(), DType::kF32, {c.layers, c.kv_heads, stride});
  a.value_norms = TensorView(value_norms.data(), DType::kF32, {c.layers, c.kv_heads, stride});
  a.key_anchor_dot = TensorView(anchor.data(), DType::kF32, {c.layers, c.kv_heads, stride});
  a.window_attention_max =
      TensorView(running_max.data(), DType::kF32, {c.layers, c.kv_heads, stride});
  if (c.skip) {
    for (int i = 0; i < 2; ++i) a.skip_begin[i] = skip[i][0], a.skip_end[i] = skip[i][1];
  }
  kv_signals(a);

  for (int l = 0; l < c.layers; ++l) {
    for (int h = 0; h < c.kv_heads; ++h) {
      const int n = valid(l, h);
      const size_t row = (static_cast<size_t>(l) * c.kv_heads + h) * stride;
      std::vector<double> sum_probs(size_t(c.group) * n, 0), sum_max(n, 0),
          anchor_ref(c.head_dim, 0), window_max(n, 0);
      for (int j = 0; j < c.num_queries; ++j) {
        const int limit = n - (c.num_queries - 1 - j);
        std::vector<double> best(limit, 0);
        for (int g = 0; g < c.group; ++g) {
          const float* q =
              queries.data() + ((size_t(l) * rows + j) * heads + h * c.group + g) * c.head_dim;
          std::vector<double> logits(limit, -INFINITY);
          for (int v = 0; v < limit; ++v) {
            if (skipped(v)) continue;
            const float* k = slot_ptr(l, 0, h, physical(l, h, v));
            double dot = 0;
            for (int d = 0; d < c.head_dim; ++d) dot += double{q[d]} * k[d];
            logits[v] = dot * 0.125;
          }
          const double max = *std::max_element(logits.begin(), logits.end());
          double total = 0;
          for (double& x : logits) total += (x = std::exp(x - max));
          for (int v = 0; v < limit; ++v) {
            sum_probs[size_t(g) * n + v] += logits[v] / total;
            best[v] = std::max(best[v], logits[v] / total);
          }
        }
        for (int v = 0; v < limit; ++v) {
          sum_max[v] += best[v];
          window_max[v] = std::max(window_max[v], best[v]);
        }
      }
      for (int v = 0; v < n; ++v) {
        for (int g = 0; g < c.group; ++g) {
          EXPECT_NEAR(window[(size_t(l) * heads + h * c.group + g) * stride + v],
                      sum_probs[size_t(g) * n + v], 1e-5)
              << "window attention, layer " << l << " head " << h * c.group + g << " slot " << v;
        }
        EXPECT_NEAR(group_max[row + v], sum_max[v], 1e-5) << "group max, slot " << v;
        const double want_max = skipped(v)
                                    ? running_before[row + v]
                                    : std::max(double{running_before[row + v]}, window_max[v]);
        EXPECT_NEAR(running_max[row + v], want_max, 1e-6) << "running max, slot " << v;
        if (skipped(v)) {
          EXPECT_EQ(group_max[row + v], 0.0f) << "skipped slot " << v;
        }
        const float* k = slot_ptr(l, 0, h, physical(l, h, v));
        const float* x = slot_ptr(l, 1, h, physical(l, h, v));
        double kn = 0, vn = 0;
        for (int d = 0; d < c.head_dim; ++d) kn += double{k[d]} * k[d], vn += double{x[d]} * x[d];
        EXPECT_NEAR(key_norms[row + v], std::sqrt(kn), 1e-4);
        EXPECT_NEAR(value_norms[row + v], std::sqrt(vn), 1e-4);
        for (int d = 0; d < c.head_dim; ++d) anchor_ref[d] += k[d] / std::sqrt(kn) / n;
      }
      for (int v = 0; v < n; ++v) {
        const float* k = slot_ptr(l, 0, h, physical(l, h, v));
        double dot = 0, kn = 0;
        for (int d = 0; d < c.head_dim; ++d) dot += k[d] * anchor_ref[d], kn += double{k[d]} * k[d];
        EXPECT_NEAR(anchor[row + v], dot / std::sqrt(kn), 1e-5) << "anchor dot, slot " << v;
      }
      // Entries past the head's valid slots are left alone.
      for (int v = n; v < stride; ++v) {
        EXPECT_EQ(key_norms[row + v], -1.0f);
        EXPECT_EQ(running_max[row + v], running_before[row + v]);
      }
    }
  }
}

TEST(KvSignals, MatchDenseReferences) {
  uint32_t seed = 1;
  for (bool compacted : {false, true}) {
    for (bool skip : {false, true}) {
      run_case({2, 2, 3, 16, 4, 37, 5, compacted, skip}, seed++);
      run_case({1, 1, 1, 8, 8, 20, 1, compacted, skip}, seed++);
      run_case({3, 2, 4, 32, 16, 70, 16, compacted, skip}, seed++);
    }
  }
}

TEST(CopyRows, GathersStridedRows) {
  // Source: the first 6 columns of a [5, 10] buffer; destination rows 3, 0, 7 of [8, 6].
  std::vector<float> src(50), dst(48, 0);
  std::iota(src.begin(), src.end(), 0.0f);
  std::vector<int32_t> src_rows = {4, 1, 2}, dst_rows = {3, 0, 7};
  copy_rows({TensorView(dst.data(), DType::kF32, {8, 6}),
             TensorView(dst_rows.data(), DType::kI32, {3}),
             TensorView(src.data(), DType::kF32, {5, 10}).slice(1, 0, 6),
             TensorView(src_rows.data(), DType::kI32, {3})});
  for (int i = 0; i < 3; ++i) {
    for (int d = 0; d < 6; ++d) EXPECT_EQ(dst[dst_rows[i] * 6 + d], src[src_rows[i] * 10 + d]);
  }
  EXPECT_EQ(dst[1 * 6], 0.0f);  // untouched rows stay
}

}  // namespace
}  // namespace sieve::kernels::cpu
