// ExpectedAttention's ops (accumulate_query_moments, expected_logits) against dense references
// computed here: query rows at a stride wider than a head row (the fused QKV buffer), summed over
// two calls; a paged, shuffled cache with GQA, partial rotary dimensions and a compacted
// sequence. The reference fits mean and covariance from the raw queries (centred, in double),
// rotates them forward (mu ← R mu, Σ ← R Σ Rᵀ with R a dense matrix) and takes
// z = scale·mu·k + scale²/2·kᵀΣk, where the op rotates the key back instead.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged.h"

namespace sieve::kernels::cpu {
namespace {

struct MomentCase {
  int layers, kv_heads, group, head_dim, rotary_dim, tpp, num_tokens, num_queries;
  bool compacted, covariance;
};

void run_case(const MomentCase& c, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " compacted " << c.compacted
                                    << " covariance " << c.covariance);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const int heads = c.kv_heads * c.group, d = c.head_dim, half = c.rotary_dim / 2;
  const int64_t width = int64_t{d} * (d + 1);

  // Queries: per layer, rows of a wider buffer (QKV-like), with a mean away from zero.
  const int row_width = heads * d + 2 * c.kv_heads * d;
  std::vector<float> qkv(static_cast<size_t>(c.layers) * c.num_queries * row_width);
  for (size_t i = 0; i < qkv.size(); ++i) qkv[i] = normal(rng) + (i % 5 == 0 ? 1.5f : 0.0f);
  auto query = [&](int l, int t, int h) {
    return qkv.data() + (static_cast<size_t>(l) * c.num_queries + t) * row_width + h * d;
  };
  std::vector<float> moments(static_cast<size_t>(c.layers) * heads * width, 0.0f);
  const int split = c.num_queries / 3;
  for (int l = 0; l < c.layers; ++l) {
    const TensorView q = TensorView(qkv.data() + static_cast<size_t>(l) * c.num_queries * row_width,
                                    DType::kF32, {c.num_queries, row_width})
                             .slice(1, 0, heads * d)
                             .unflatten(1, heads, d);
    const TensorView m(moments.data() + static_cast<size_t>(l) * heads * width, DType::kF32,
                       {heads, width});
    accumulate_query_moments({q.slice(0, 0, split), m});
    accumulate_query_moments({q.slice(0, split, c.num_queries), m});
  }
  // The sums themselves.
  double max_err = 0, max_ref = 0;
  for (int l = 0; l < c.layers; ++l) {
    for (int h = 0; h < heads; ++h) {
      const float* m = moments.data() + (static_cast<size_t>(l) * heads + h) * width;
      for (int i = 0; i < d; ++i) {
        double sum = 0;
        for (int t = 0; t < c.num_queries; ++t) sum += query(l, t, h)[i];
        max_err = std::max(max_err, std::fabs(m[i] - sum));
        max_ref = std::max(max_ref, std::fabs(sum));
        for (int j = 0; j < d; ++j) {
          double outer = 0;
          for (int t = 0; t < c.num_queries; ++t) {
            outer += double{query(l, t, h)[i]} * query(l, t, h)[j];
          }
          max_err = std::max(max_err, std::fabs(m[d + i * d + j] - outer));
          max_ref = std::max(max_ref, std::fabs(outer));
        }
      }
    }
  }
  EXPECT_LE(max_err, 1e-6 * max_ref) << "moment sums";

  // A paged cache of keys (values unused) and its valid slots.
  const int pages = (c.num_tokens + c.tpp - 1) / c.tpp;
  KvCacheLayout layout{c.layers, c.kv_heads, d, c.tpp, pages + 2, DType::kF32, std::nullopt, 0};
  std::vector<float> arena(layout.arena_bytes() / sizeof(float), NAN);
  std::vector<int32_t> table(layout.num_pages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  table.resize(pages);
  const PagedSlots slots(reinterpret_cast<const std::byte*>(arena.data()), layout,
                          table.data());
  auto key = [&](int l, int h, int j) {
    return arena.data() + slots.data_offset(l, 0, h, j) / sizeof(float);
  };
  const int gap_end = c.compacted ? c.num_tokens - 4 : c.num_tokens;
  std::vector<int32_t> head_lens;
  for (int r = 0; r < c.layers * c.kv_heads; ++r) {
    head_lens.push_back(c.compacted ? static_cast<int>(rng() % (gap_end + 1)) : 0);
  }
  auto packed = [&](int l, int h) {
    return c.compacted ? head_lens[l * c.kv_heads + h] : c.num_tokens;
  };
  auto physical = [&](int l, int h, int v) {
    return v < packed(l, h) ? v : gap_end + (v - packed(l, h));
  };
  auto valid = [&](int l, int h) { return packed(l, h) + c.num_tokens - gap_end; };
  for (int l = 0; l < c.layers; ++l) {
    for (int h = 0; h < c.kv_heads; ++h) {
      for (int v = 0; v < valid(l, h); ++v) {
        float* k = key(l, h, physical(l, h, v));
        for (int i = 0; i < d; ++i) k[i] = 0.5f * normal(rng);
      }
    }
  }
  // An averaged rotation: each pair's mean of unit rotations is a shorter one.
  std::vector<float> cos(half), sin(half);
  for (int i = 0; i < half; ++i) {
    const double angle = 0.7 * i + 0.3, length = 1.0 - 0.1 * i;
    cos[i] = static_cast<float>(length * std::cos(angle));
    sin[i] = static_cast<float>(length * std::sin(angle));
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int stride = c.num_tokens + 2;
  std::vector<float> out(static_cast<size_t>(c.layers) * heads * stride, -7.0f);
  ExpectedLogitArgs a;
  a.arena = TensorView(arena.data(), DType::kU8, {static_cast<int64_t>(layout.arena_bytes())});
  a.layout = layout;
  a.page_table = TensorView(table.data(), DType::kI32, {pages});
  a.num_tokens = c.num_tokens;
  if (c.compacted) {
    a.head_lens =
        TensorView(head_lens.data(), DType::kI32, {static_cast<int64_t>(head_lens.size())});
    a.gap_end = gap_end;
  }
  a.moments = TensorView(moments.data(), DType::kF32, {c.layers, heads, width});
  a.count = c.num_queries;
  a.rope_cos = TensorView(cos.data(), DType::kF32, {half});
  a.rope_sin = TensorView(sin.data(), DType::kF32, {half});
  a.covariance = c.covariance;
  a.scale = scale;
  a.slot_stride = stride;
  a.out = TensorView(out.data(), DType::kF32, {c.layers, heads, stride});
  expected_logits(a);

  // R as a dense matrix: pair (i, i + half) rotated by [[cos, -sin], [sin, cos]].
  std::vector<double> R(static_cast<size_t>(d) * d, 0.0);
  for (int i = 0; i < d; ++i) R[i * d + i] = 1.0;
  for (int i = 0; i < half; ++i) {
    R[i * d + i] = cos[i];
    R[i * d + i + half] = -sin[i];
    R[(i + half) * d + i] = sin[i];
    R[(i + half) * d + i + half] = cos[i];
  }
  max_err = 0, max_ref = 0;
  for (int l = 0; l < c.layers; ++l) {
    for (int h = 0; h < heads; ++h) {
      std::vector<double> mu(d, 0.0), cov(static_cast<size_t>(d) * d, 0.0);
      for (int t = 0; t < c.num_queries; ++t) {
        for (int i = 0; i < d; ++i) mu[i] += query(l, t, h)[i] / double(c.num_queries);
      }
      for (int t = 0; t < c.num_queries; ++t) {
        for (int i = 0; i < d; ++i) {
          for (int j = 0; j < d; ++j) {
            cov[i * d + j] +=
                (query(l, t, h)[i] - mu[i]) * (query(l, t, h)[j] - mu[j]) / double(c.num_queries);
          }
        }
      }
      std::vector<double> mu_r(d, 0.0), rc(static_cast<size_t>(d) * d, 0.0),
          cov_r(static_cast<size_t>(d) * d, 0.0);
      for (int i = 0; i < d; ++i) {
        for (int j = 0; j < d; ++j) mu_r[i] += R[i * d + j] * mu[j];
      }
      for (int i = 0; i < d; ++i) {
        for (int j = 0; j < d; ++j) {
          for (int k = 0; k < d; ++k) rc[i * d + j] += R[i * d + k] * cov[k * d + j];
        }
      }
      for (int i = 0; i < d; ++i) {
        for (int j = 0; j < d; ++j) {
          for (int k = 0; k < d; ++k) cov_r[i * d + j] += rc[i * d + k] * R[j * d + k];
        }
      }
      const int kv = h / c.group;
      const float* got = out.data() + (static_cast<size_t>(l) * heads + h) * stride;
      for (int v = 0; v < stride; ++v) {
        if (v >= valid(l, kv)) {
          EXPECT_EQ(got[v], -7.0f) << "written past the valid slots";
          continue;
        }
        const float* k = key(l, kv, physical(l, kv, v));
        double linear = 0, quadratic = 0;
        for (int i = 0; i < d; ++i) {
          linear += mu_r[i] * k[i];
          for (int j = 0; j < d; ++j) quadratic += k[i] * cov_r[i * d + j] * k[j];
        }
        const double want = scale * linear + (c.covariance ? 0.5 * scale * scale * quadratic : 0.0);
        max_err = std::max(max_err, std::fabs(got[v] - want));
        max_ref = std::max(max_ref, std::fabs(want));
      }
    }
  }
  EXPECT_LE(max_err, 1e-5 * max_ref) << "expected logits, max |z| " << max_ref;
}

TEST(QueryMoments, SumsAndExpectedLogitsMatchADenseReference) {
  run_case({2, 2, 3, 16, 16, 5, 23, 31, false, true}, 1);
  run_case({2, 2, 3, 16, 12, 5, 23, 31, false, true}, 2);  // partial rotary
  run_case({3, 1, 4, 8, 8, 3, 17, 9, true, true}, 3);      // compacted, MQA
  run_case({2, 2, 2, 16, 16, 4, 19, 12, true, false}, 4);  // no covariance
}

}  // namespace
}  // namespace sieve::kernels::cpu
