// The KV formats on the CPU backend (kvcache/README.md, "Formats") against the numpy reference in
// tests/fixtures/kv_formats (make_goldens.py): the fp8 codec, each format's write -> read round
// trip, attention over a batch that mixes every format in one arena, compaction moving scales
// with their elements, and the compression signals reading quantized keys.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/kv_quant.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged.h"
#include "nlohmann/json.hpp"

namespace sieve::kernels::cpu {
namespace {

using kvcache::KvFormatId;
using nlohmann::json;

const json& goldens() {
  static const json* g = [] {
    std::ifstream in(std::filesystem::path(SIEVE_SOURCE_DIR) /
                     "tests/fixtures/kv_formats/goldens.json");
    SIEVE_CHECK(in) << "missing tests/fixtures/kv_formats/goldens.json";
    return new json(json::parse(in));
  }();
  return *g;
}

TEST(KvFormatsCpu, Fp8CodecMatchesTheCodeTable) {
  const json& g = goldens();
  for (int code = 0; code < 256; ++code) {
    const float got = fp8_e4m3_to_f32(static_cast<uint8_t>(code));
    if (g["fp8_values"][code].is_null()) {
      EXPECT_TRUE(std::isnan(got)) << code;
    } else {
      EXPECT_EQ(got, g["fp8_values"][code].get<float>()) << code;
    }
  }
  const std::vector<float> probes = g["fp8_probes"];
  const std::vector<int> codes = g["fp8_probe_codes"];
  for (size_t i = 0; i < probes.size(); ++i) {
    EXPECT_EQ(f32_to_fp8_e4m3(probes[i]), codes[i]) << "probe " << probes[i];
  }
}

// An arena of one layer whose pages hold 4 f32 tokens; every format shares it.
KvCacheLayout arena_layout(int kv_heads, int head_dim, int num_pages) {
  KvCacheLayout l;
  l.num_layers = 1;
  l.num_kv_heads = kv_heads;
  l.head_dim = head_dim;
  l.num_pages = num_pages;
  l.page_bytes = 2ull * kv_heads * 4 * head_dim * sizeof(float);
  return l;
}

// One sequence of `format` written into the shared arena with write_kv.
struct FormatSeq {
  KvFormatId format;
  KvCacheLayout layout;               // of the format
  std::vector<int32_t> pages;         // its page table
  std::vector<float> k, v;            // what was written, [tokens, kv_heads, head_dim]
  std::vector<float> read_k, read_v;  // what reading it back must give (the numpy reference)
};

// The reference read of an unquantized format, or the golden one of a quantized format.
std::vector<float> expected_read(KvFormatId format, const json& c, const char* kv) {
  const std::vector<float> x = c[kv];
  switch (format) {
    case KvFormatId::kF32:
      return x;
    case KvFormatId::kBF16: {
      std::vector<float> out(x.size());
      for (size_t i = 0; i < x.size(); ++i) out[i] = bf16_to_f32(f32_to_bf16(x[i]));
      return out;
    }
    case KvFormatId::kFp8E4M3:
    case KvFormatId::kInt8:
    case KvFormatId::kInt4:
      return c["read"][std::string(kvcache::kv_format(format).name)][kv];
  }
  return {};
}

constexpr KvFormatId kAllFormats[] = {KvFormatId::kF32, KvFormatId::kBF16, KvFormatId::kFp8E4M3,
                                      KvFormatId::kInt8, KvFormatId::kInt4};

// Writes every format's sequence of golden case `c` into `arena`, each on pages of its own.
std::vector<FormatSeq> write_all(const json& c, const KvCacheLayout& base, Tensor& arena,
                                 bool parallel, std::mt19937& rng) {
  const int tokens = c["tokens"], heads = c["kv_heads"], dim = c["head_dim"];
  std::vector<int32_t> free_pages(base.num_pages);
  std::iota(free_pages.begin(), free_pages.end(), 0);
  std::shuffle(free_pages.begin(), free_pages.end(), rng);
  std::vector<FormatSeq> seqs;
  for (KvFormatId format : kAllFormats) {
    FormatSeq s{format, base.for_format(format), {}, c["k"], c["v"], {}, {}};
    s.read_k = expected_read(format, c, "k");
    s.read_v = expected_read(format, c, "v");
    const int tpp = s.layout.tokens_per_page;
    for (int p = 0; p < (tokens + tpp - 1) / tpp; ++p) {
      s.pages.push_back(free_pages.back());
      free_pages.pop_back();
    }
    std::vector<int32_t> slots(tokens);
    for (int t = 0; t < tokens; ++t) slots[t] = s.pages[t / tpp] * tpp + t % tpp;
    const KvWriteArgs args{TensorView(s.k.data(), DType::kF32, {tokens, heads, dim}),
                           TensorView(s.v.data(), DType::kF32, {tokens, heads, dim}),
                           TensorView(slots.data(), DType::kI32, {tokens}),
                           arena.view(),
                           s.layout,
                           0,
                           {},
                           {}};
    parallel ? write_kv(args) : ref::write_kv(args);
    seqs.push_back(std::move(s));
  }
  return seqs;
}

TEST(KvFormatsCpu, WriteThenReadGivesTheNumpyReference) {
  std::mt19937 rng(1);
  for (const json& c : goldens()["cases"]) {
    const int tokens = c["tokens"], heads = c["kv_heads"], dim = c["head_dim"];
    for (bool parallel : {false, true}) {
      const KvCacheLayout base = arena_layout(heads, dim, 24);
      Tensor arena = Tensor::empty(DType::kU8, {static_cast<int64_t>(base.arena_bytes())});
      for (const FormatSeq& s : write_all(c, base, arena, parallel, rng)) {
        const kvcache::KvFormat& f = kvcache::kv_format(s.format);
        SCOPED_TRACE(::testing::Message() << f.name << " head_dim " << dim);
        // The tokens of each format the page holds, no more than its bytes allow.
        EXPECT_LE(2ull * heads * s.layout.tokens_per_page * f.bytes_per_token_head(dim),
                  base.page_bytes);
        EXPECT_GT(2ull * heads * (s.layout.tokens_per_page + 1) * f.bytes_per_token_head(dim),
                  base.page_bytes);
        const PagedSlots slots(static_cast<const std::byte*>(arena.view().raw()), s.layout,
                               s.pages.data());
        std::vector<float> scratch(dim);
        int mismatches = 0;
        for (int t = 0; t < tokens; ++t) {
          for (int h = 0; h < heads; ++h) {
            for (int kv = 0; kv < 2; ++kv) {
              const float* got = slots.read(0, kv, h, t, scratch.data());
              const std::vector<float>& want = kv == 0 ? s.read_k : s.read_v;
              const std::vector<float>& x = kv == 0 ? s.k : s.v;
              float amax = 0;
              for (int d = 0; d < dim; ++d)
                amax = std::max(amax, std::fabs(x[(t * heads + h) * dim + d]));
              for (int d = 0; d < dim; ++d) {
                const size_t i = (static_cast<size_t>(t) * heads + h) * dim + d;
                if (got[d] != want[i] && ++mismatches <= 5) {
                  ADD_FAILURE() << "token " << t << " head " << h << " kv " << kv << " channel "
                                << d << ": read " << got[d] << ", numpy " << want[i];
                }
                // And the error bound each format promises against what was written; a vector
                // so small that its scale is a subnormal half (the tiny golden one) also loses
                // up to the half's step, 2^-24, times the largest code.
                const float err = std::fabs(got[d] - x[i]);
                switch (s.format) {
                  case KvFormatId::kF32:
                    EXPECT_EQ(err, 0.0f);
                    break;
                  case KvFormatId::kBF16:
                    EXPECT_LE(err, std::fabs(x[i]) * 0x1p-8f);
                    break;
                  case KvFormatId::kFp8E4M3:  // 3 mantissa bits; the half scale adds 2^-11
                    EXPECT_LE(err, std::fabs(x[i]) * 0x1p-4f + amax * 0x1p-10f + 448 * 0x1p-25f);
                    break;
                  case KvFormatId::kInt8:  // half a step of amax / 127
                    EXPECT_LE(err, amax / 127 * 0.51f + 127 * 0x1p-25f);
                    break;
                  case KvFormatId::kInt4:  // a step of its group's range / 15
                    EXPECT_LE(err, 2 * amax / 15 * 1.01f + 15 * 0x1p-25f);
                    break;
                }
              }
            }
          }
        }
        EXPECT_EQ(mismatches, 0);
      }
    }
  }
}

// softmax(q·Kᵀ·scale)·V over the first `limit` rows of dense K and V, in double.
std::vector<double> dense_attention(const float* q, const std::vector<float>& k,
                                    const std::vector<float>& v, int heads, int head, int dim,
                                    int limit, float scale) {
  std::vector<double> scores(limit), out(dim, 0.0);
  double max = -INFINITY;
  for (int j = 0; j < limit; ++j) {
    double dot = 0;
    for (int d = 0; d < dim; ++d) dot += double{q[d]} * k[(j * heads + head) * dim + d];
    scores[j] = dot * scale;
    max = std::max(max, scores[j]);
  }
  double sum = 0;
  for (double& s : scores) sum += (s = std::exp(s - max));
  for (int j = 0; j < limit; ++j) {
    for (int d = 0; d < dim; ++d) out[d] += scores[j] / sum * v[(j * heads + head) * dim + d];
  }
  return out;
}

TEST(KvFormatsCpu, OneAttentionCallReadsEveryFormatOfAMixedBatch) {
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  for (const json& c : goldens()["cases"]) {
    const int tokens = c["tokens"], kv_heads = c["kv_heads"], dim = c["head_dim"];
    const int group = 3, heads = kv_heads * group, q_len = 2;
    const KvCacheLayout base = arena_layout(kv_heads, dim, 24);
    Tensor arena = Tensor::empty(DType::kU8, {static_cast<int64_t>(base.arena_bytes())});
    const std::vector<FormatSeq> seqs = write_all(c, base, arena, true, rng);
    const int num_seqs = static_cast<int>(seqs.size());
    // Every sequence: the last q_len tokens are this step's queries.
    std::vector<int32_t> qo_indptr{0}, kv_indptr{0}, kv_indices, kv_lens, formats;
    for (const FormatSeq& s : seqs) {
      qo_indptr.push_back(qo_indptr.back() + q_len);
      kv_indices.insert(kv_indices.end(), s.pages.begin(), s.pages.end());
      kv_indptr.push_back(static_cast<int32_t>(kv_indices.size()));
      kv_lens.push_back(tokens);
      formats.push_back(static_cast<int32_t>(s.format));
    }
    const int rows = qo_indptr.back();
    std::vector<float> q(static_cast<size_t>(rows) * heads * dim), out(q.size()), alone(q.size());
    for (float& x : q) x = normal(rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
    AttentionArgs a;
    a.q = TensorView(q.data(), DType::kF32, {rows, heads, dim});
    a.out = TensorView(out.data(), DType::kF32, {rows, heads, dim});
    a.arena = arena.view();
    a.layout = base.for_format(KvFormatId::kF32);
    a.qo_indptr = TensorView(qo_indptr.data(), DType::kI32, {num_seqs + 1});
    a.kv_indptr = TensorView(kv_indptr.data(), DType::kI32, {num_seqs + 1});
    a.kv_indices =
        TensorView(kv_indices.data(), DType::kI32, {static_cast<int64_t>(kv_indices.size())});
    a.kv_lens = TensorView(kv_lens.data(), DType::kI32, {num_seqs});
    a.kv_formats = TensorView(formats.data(), DType::kI32, {num_seqs});
    a.scale = scale;
    attention(a);
    for (int s = 0; s < num_seqs; ++s) {
      SCOPED_TRACE(::testing::Message()
                   << kvcache::kv_format(seqs[s].format).name << " head_dim " << dim);
      // Against dense attention over the numpy reference's read-back K and V.
      double max_err = 0;
      for (int i = 0; i < q_len; ++i) {
        const int row = qo_indptr[s] + i;
        for (int h = 0; h < heads; ++h) {
          const std::vector<double> want = dense_attention(
              &q[(static_cast<size_t>(row) * heads + h) * dim], seqs[s].read_k, seqs[s].read_v,
              kv_heads, h / group, dim, tokens - q_len + i + 1, scale);
          for (int d = 0; d < dim; ++d) {
            max_err = std::max(
                max_err,
                std::fabs(out[(static_cast<size_t>(row) * heads + h) * dim + d] - want[d]));
          }
        }
      }
      EXPECT_LT(max_err, 2e-5);
      // And the same as the sequence alone, through the single-format path and the reference.
      for (bool reference : {false, true}) {
        std::vector<int32_t> one_qo{0, q_len},
            one_kv{0, static_cast<int32_t>(seqs[s].pages.size())};
        std::vector<int32_t> one_len{tokens};
        std::vector<float> one_out(static_cast<size_t>(q_len) * heads * dim);
        AttentionArgs b = a;
        b.q = TensorView(&q[static_cast<size_t>(qo_indptr[s]) * heads * dim], DType::kF32,
                         {q_len, heads, dim});
        b.out = TensorView(one_out.data(), DType::kF32, {q_len, heads, dim});
        b.layout = seqs[s].layout;
        b.qo_indptr = TensorView(one_qo.data(), DType::kI32, {2});
        b.kv_indptr = TensorView(one_kv.data(), DType::kI32, {2});
        b.kv_indices = TensorView(const_cast<int32_t*>(seqs[s].pages.data()), DType::kI32,
                                  {static_cast<int64_t>(seqs[s].pages.size())});
        b.kv_lens = TensorView(one_len.data(), DType::kI32, {1});
        b.kv_formats = TensorView();
        reference ? ref::attention(b) : attention(b);
        for (size_t i = 0; i < one_out.size(); ++i) {
          ASSERT_EQ(one_out[i], out[static_cast<size_t>(qo_indptr[s]) * heads * dim + i])
              << "alone vs batched, reference " << reference << ", element " << i;
        }
      }
    }
  }
}

TEST(KvFormatsCpu, CompactionMovesScalesWithTheirElements) {
  std::mt19937 rng(3);
  for (const json& c : goldens()["cases"]) {
    const int heads = c["kv_heads"], dim = c["head_dim"];
    const KvCacheLayout base = arena_layout(heads, dim, 24);
    Tensor arena = Tensor::empty(DType::kU8, {static_cast<int64_t>(base.arena_bytes())});
    for (FormatSeq& s : write_all(c, base, arena, true, rng)) {
      SCOPED_TRACE(kvcache::kv_format(s.format).name);
      // Head 0 keeps slots {1, 3, 5}, head 1 keeps {0, 4}.
      const int max_keep = 3;
      std::vector<int32_t> keep = {1, 3, 5, 0, 4, 0};
      std::vector<int32_t> counts = {3, 2};
      compact_kv({arena.view(), s.layout,
                  TensorView(s.pages.data(), DType::kI32, {static_cast<int64_t>(s.pages.size())}),
                  TensorView(keep.data(), DType::kI32, {1, heads, max_keep}),
                  TensorView(counts.data(), DType::kI32, {1 * heads})});
      const PagedSlots slots(static_cast<const std::byte*>(arena.view().raw()), s.layout,
                             s.pages.data());
      std::vector<float> scratch(dim);
      for (int h = 0; h < heads; ++h) {
        for (int j = 0; j < counts[h]; ++j) {
          const int from = keep[h * max_keep + j];
          for (int kv = 0; kv < 2; ++kv) {
            const float* got = slots.read(0, kv, h, j, scratch.data());
            const std::vector<float>& want = kv == 0 ? s.read_k : s.read_v;
            for (int d = 0; d < dim; ++d) {
              ASSERT_EQ(got[d], want[(static_cast<size_t>(from) * heads + h) * dim + d])
                  << "head " << h << " slot " << j << " from " << from << " kv " << kv;
            }
          }
        }
      }
    }
  }
}

TEST(KvFormatsCpu, SignalsReadQuantizedKeysAndValues) {
  std::mt19937 rng(4);
  for (const json& c : goldens()["cases"]) {
    const int tokens = c["tokens"], heads = c["kv_heads"], dim = c["head_dim"];
    const KvCacheLayout base = arena_layout(heads, dim, 24);
    Tensor arena = Tensor::empty(DType::kU8, {static_cast<int64_t>(base.arena_bytes())});
    for (FormatSeq& s : write_all(c, base, arena, true, rng)) {
      SCOPED_TRACE(kvcache::kv_format(s.format).name);
      std::vector<float> key_norms(static_cast<size_t>(heads) * tokens, NAN);
      std::vector<float> value_norms(key_norms.size(), NAN);
      KvSignalArgs a;
      a.arena = arena.view();
      a.layout = s.layout;
      a.page_table =
          TensorView(s.pages.data(), DType::kI32, {static_cast<int64_t>(s.pages.size())});
      a.num_tokens = tokens;
      a.slot_stride = tokens;
      a.key_norms = TensorView(key_norms.data(), DType::kF32, {1, heads, tokens});
      a.value_norms = TensorView(value_norms.data(), DType::kF32, {1, heads, tokens});
      kv_signals(a);
      for (int h = 0; h < heads; ++h) {
        for (int t = 0; t < tokens; ++t) {
          double k2 = 0, v2 = 0;
          for (int d = 0; d < dim; ++d) {
            const size_t i = (static_cast<size_t>(t) * heads + h) * dim + d;
            k2 += double{s.read_k[i]} * s.read_k[i];
            v2 += double{s.read_v[i]} * s.read_v[i];
          }
          EXPECT_NEAR(key_norms[h * tokens + t], std::sqrt(k2), 1e-5 * (1 + std::sqrt(k2)));
          EXPECT_NEAR(value_norms[h * tokens + t], std::sqrt(v2), 1e-5 * (1 + std::sqrt(v2)));
        }
      }
    }
  }
}

}  // namespace
}  // namespace sieve::kernels::cpu
