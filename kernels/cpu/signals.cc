// Compression signals on the CPU (Backend::kv_signals, copy_rows): the reference for the CUDA
// kernels (ref::kv_signals) and the production CPU path (parallel over (layer, head), window
// attention through one sgemm per head).

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged.h"
#include "kernels/cpu/rows.h"

namespace sieve::kernels::cpu {
namespace {

// One (layer, KV head) of a sequence: its valid slots in virtual numbering.
struct HeadSlots {
  const PagedSlots* slots;  // the sequence's pages, read as its format
  const KvCacheLayout* layout;
  int layer;
  int kv_head;
  int64_t prefix_end;  // virtual v < prefix_end is physical v; later ones follow gap_end
  int64_t gap_end;
  int64_t count;   // valid slots
  float* scratch;  // head_dim floats: a quantized row is dequantized here

  // kv: 0 = K, 1 = V. Valid until the next call (a quantized row lives in `scratch`).
  const float* row(int64_t v, int kv) const {
    const int64_t j = v < prefix_end ? v : gap_end + (v - prefix_end);
    return slots->read(layer, kv, kv_head, j, scratch);
  }
};

float norm(const float* x, int n) {
  double sum = 0;
  for (int d = 0; d < n; ++d) sum += double{x[d]} * x[d];
  return static_cast<float>(std::sqrt(sum));
}

float* out_row(const TensorView& out, int layer, int head, int heads, int stride) {
  return out.data<float>() + (static_cast<int64_t>(layer) * heads + head) * stride;
}

// Whether virtual slot v is left out of the window's softmax (KvSignalArgs::skip_begin).
bool skipped(const KvSignalArgs& a, int64_t v) {
  return (v >= a.skip_begin[0] && v < a.skip_end[0]) || (v >= a.skip_begin[1] && v < a.skip_end[1]);
}

// The window fits the head's slots and the skipped ranges precede it.
void check_window(const KvSignalArgs& a, const HeadSlots& head) {
  const int w = a.num_queries;
  SIEVE_CHECK_LE(w, head.count) << "a window of " << w << " queries over " << head.count
                                << " slots";
  for (int i = 0; i < 2; ++i) {
    SIEVE_CHECK(a.skip_begin[i] >= 0 && a.skip_begin[i] <= a.skip_end[i] &&
                (a.skip_begin[i] == a.skip_end[i] || a.skip_end[i] <= head.count - w))
        << "skipped slots [" << a.skip_begin[i] << ", " << a.skip_end[i]
        << ") must precede the window";
  }
}

// Logits p[0, limit) to softmax probabilities in place, skipped slots left out (0).
void softmax_in_place(const KvSignalArgs& a, float* p, int64_t limit) {
  float max = -INFINITY;
  for (int64_t v = 0; v < limit; ++v) {
    if (!skipped(a, v)) max = std::max(max, p[v]);
  }
  double sum = 0;
  for (int64_t v = 0; v < limit; ++v) {
    p[v] = skipped(a, v) ? 0.0f : std::exp(p[v] - max);
    sum += p[v];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t v = 0; v < limit; ++v) p[v] *= inv;
}

// Softmax probabilities of query `q` over the first `limit` slots of `head` (skipped ones 0),
// into `p`.
void query_probs(const KvSignalArgs& a, const float* q, const HeadSlots& head, int64_t limit,
                 std::vector<float>& p) {
  const int head_dim = head.layout->head_dim;
  const float scale = a.scale;
  p.assign(limit, 0.0f);
  for (int64_t v = 0; v < limit; ++v) {
    if (skipped(a, v)) continue;
    const float* k = head.row(v, 0);
    float dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int d = 0; d < head_dim; ++d) dot += q[d] * k[d];
    p[v] = dot * scale;
  }
  softmax_in_place(a, p.data(), limit);
}

void window_signals(const KvSignalArgs& a, const HeadSlots& head, int num_heads) {
  const KvCacheLayout& layout = *head.layout;
  const int group = num_heads / layout.num_kv_heads;
  const int w = a.num_queries;
  check_window(a, head);
  float* group_max = a.window_attention_group_max.empty()
                         ? nullptr
                         : out_row(a.window_attention_group_max, head.layer, head.kv_head,
                                   layout.num_kv_heads, a.slot_stride);
  if (group_max) std::fill_n(group_max, head.count, 0.0f);
  float* running_max = a.window_attention_max.empty()
                           ? nullptr
                           : out_row(a.window_attention_max, head.layer, head.kv_head,
                                     layout.num_kv_heads, a.slot_stride);
  std::vector<float> p, max_over_group;
  for (int g = 0; g < group; ++g) {
    const int h = head.kv_head * group + g;
    float* sum = a.window_attention.empty()
                     ? nullptr
                     : out_row(a.window_attention, head.layer, h, num_heads, a.slot_stride);
    if (sum) std::fill_n(sum, head.count, 0.0f);
  }
  for (int j = 0; j < w; ++j) {
    const int64_t limit = head.count - (w - 1 - j);
    if (group_max || running_max) max_over_group.assign(limit, 0.0f);
    for (int g = 0; g < group; ++g) {
      const int h = head.kv_head * group + g;
      const float* q = a.queries.data<float>() + head.layer * a.queries.stride(0) +
                       j * a.queries.stride(1) + h * a.queries.stride(2);
      query_probs(a, q, head, limit, p);
      if (!a.window_attention.empty()) {
        float* sum = out_row(a.window_attention, head.layer, h, num_heads, a.slot_stride);
        for (int64_t v = 0; v < limit; ++v) sum[v] += p[v];
      }
      if (group_max || running_max) {
        for (int64_t v = 0; v < limit; ++v) max_over_group[v] = std::max(max_over_group[v], p[v]);
      }
    }
    if (group_max) {
      for (int64_t v = 0; v < limit; ++v) group_max[v] += max_over_group[v];
    }
    if (running_max) {
      for (int64_t v = 0; v < limit; ++v) {
        if (!skipped(a, v)) running_max[v] = std::max(running_max[v], max_over_group[v]);
      }
    }
  }
}

// The production path's window signals: the head's keys gathered once into a matrix and scored
// against every window query of its group in one sgemm, where the reference walks the paged keys
// once per (query, head). Softmax and sums as the reference does them.
void window_signals_gemm(const KvSignalArgs& a, const HeadSlots& head, int num_heads) {
  const KvCacheLayout& layout = *head.layout;
  const int head_dim = layout.head_dim;
  const int group = num_heads / layout.num_kv_heads;
  const int w = a.num_queries;
  const int64_t n = head.count;
  check_window(a, head);
  thread_local std::vector<float> keys, queries, scores, best;
  keys.resize(static_cast<size_t>(n) * head_dim);
  for (int64_t v = 0; v < n; ++v) {
    std::memcpy(keys.data() + v * head_dim, head.row(v, 0), head_dim * sizeof(float));
  }
  // Rows (g, j): query j of the group's head g.
  queries.resize(static_cast<size_t>(group) * w * head_dim);
  for (int g = 0; g < group; ++g) {
    const int h = head.kv_head * group + g;
    for (int j = 0; j < w; ++j) {
      std::memcpy(queries.data() + (static_cast<size_t>(g) * w + j) * head_dim,
                  a.queries.data<float>() + head.layer * a.queries.stride(0) +
                      j * a.queries.stride(1) + h * a.queries.stride(2),
                  head_dim * sizeof(float));
    }
  }
  scores.resize(static_cast<size_t>(group) * w * n);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, group * w, static_cast<int>(n), head_dim,
              a.scale, queries.data(), head_dim, keys.data(), head_dim, 0.0f, scores.data(),
              static_cast<int>(n));
  float* group_max = a.window_attention_group_max.empty()
                         ? nullptr
                         : out_row(a.window_attention_group_max, head.layer, head.kv_head,
                                   layout.num_kv_heads, a.slot_stride);
  if (group_max) std::fill_n(group_max, n, 0.0f);
  float* running_max = a.window_attention_max.empty()
                           ? nullptr
                           : out_row(a.window_attention_max, head.layer, head.kv_head,
                                     layout.num_kv_heads, a.slot_stride);
  for (int g = 0; g < group; ++g) {
    if (a.window_attention.empty()) break;
    std::fill_n(
        out_row(a.window_attention, head.layer, head.kv_head * group + g, num_heads, a.slot_stride),
        n, 0.0f);
  }
  for (int j = 0; j < w; ++j) {
    const int64_t limit = n - (w - 1 - j);
    if (group_max || running_max) best.assign(limit, 0.0f);
    for (int g = 0; g < group; ++g) {
      float* p = scores.data() + (static_cast<size_t>(g) * w + j) * n;
      softmax_in_place(a, p, limit);
      if (!a.window_attention.empty()) {
        float* out = out_row(a.window_attention, head.layer, head.kv_head * group + g, num_heads,
                             a.slot_stride);
        for (int64_t v = 0; v < limit; ++v) out[v] += p[v];
      }
      if (group_max || running_max) {
        for (int64_t v = 0; v < limit; ++v) best[v] = std::max(best[v], p[v]);
      }
    }
    if (group_max) {
      for (int64_t v = 0; v < limit; ++v) group_max[v] += best[v];
    }
    if (running_max) {
      for (int64_t v = 0; v < limit; ++v) {
        if (!skipped(a, v)) running_max[v] = std::max(running_max[v], best[v]);
      }
    }
  }
}

void key_value_signals(const KvSignalArgs& a, const HeadSlots& head) {
  const KvCacheLayout& layout = *head.layout;
  const int hkv = layout.num_kv_heads;
  const int head_dim = layout.head_dim;
  if (!a.key_norms.empty()) {
    float* out = out_row(a.key_norms, head.layer, head.kv_head, hkv, a.slot_stride);
    for (int64_t v = 0; v < head.count; ++v) out[v] = norm(head.row(v, 0), head_dim);
  }
  if (!a.value_norms.empty()) {
    float* out = out_row(a.value_norms, head.layer, head.kv_head, hkv, a.slot_stride);
    for (int64_t v = 0; v < head.count; ++v) out[v] = norm(head.row(v, 1), head_dim);
  }
  if (!a.key_anchor_dot.empty()) {
    std::vector<double> anchor(head_dim, 0.0);
    for (int64_t v = 0; v < head.count; ++v) {
      const float* k = head.row(v, 0);
      const double inv = 1.0 / std::max(double{norm(k, head_dim)}, 1e-12);
      for (int d = 0; d < head_dim; ++d) anchor[d] += k[d] * inv;
    }
    for (double& x : anchor) x /= static_cast<double>(std::max<int64_t>(head.count, 1));
    float* out = out_row(a.key_anchor_dot, head.layer, head.kv_head, hkv, a.slot_stride);
    for (int64_t v = 0; v < head.count; ++v) {
      const float* k = head.row(v, 0);
      double dot = 0;
      for (int d = 0; d < head_dim; ++d) dot += k[d] * anchor[d];
      out[v] = static_cast<float>(dot / std::max(double{norm(k, head_dim)}, 1e-12));
    }
  }
}

void run_kv_signals(const KvSignalArgs& a, bool parallel) {
  const KvCacheLayout& layout = a.layout;
  check_kv_layout(layout, a.arena, 0);
  const PagedSlots slots(static_cast<const std::byte*>(a.arena.raw()), layout,
                         a.page_table.data<int32_t>());
  SIEVE_CHECK_LE(a.num_tokens, a.page_table.numel() * layout.tokens_per_page);
  const bool compacted = !a.head_lens.empty();
  if (compacted) {
    SIEVE_CHECK_EQ(a.head_lens.numel(), int64_t{layout.num_layers} * layout.num_kv_heads);
    SIEVE_CHECK(a.gap_end >= 0 && a.gap_end <= a.num_tokens) << "gap_end " << a.gap_end;
  }
  int num_heads = layout.num_kv_heads;
  if (a.num_queries > 0) {
    SIEVE_CHECK_EQ(a.queries.ndim(), 4);
    SIEVE_CHECK(a.queries.dtype() == DType::kF32 && a.queries.stride(3) == 1 &&
                a.queries.stride(2) == layout.head_dim)
        << "queries are rows of whole heads";
    SIEVE_CHECK_EQ(a.queries.size(0), layout.num_layers);
    SIEVE_CHECK_GE(a.queries.size(1), a.num_queries);
    SIEVE_CHECK_EQ(a.queries.size(3), layout.head_dim);
    num_heads = static_cast<int>(a.queries.size(2));
    SIEVE_CHECK_EQ(num_heads % layout.num_kv_heads, 0);
    SIEVE_CHECK(!compacted || a.num_tokens - a.gap_end >= a.num_queries)
        << "the window's queries must all follow the last compaction";
  }
  const int num_work = layout.num_layers * layout.num_kv_heads;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int work = 0; work < num_work; ++work) {
    const int layer = work / layout.num_kv_heads, kv_head = work % layout.num_kv_heads;
    std::vector<float> scratch(layout.head_dim);
    HeadSlots head{&slots,       &layout,      layer,        kv_head,
                   a.num_tokens, a.num_tokens, a.num_tokens, scratch.data()};
    if (compacted) {
      head.prefix_end = a.head_lens.data<int32_t>()[work];
      head.gap_end = a.gap_end;
      head.count = head.prefix_end + a.num_tokens - a.gap_end;
    }
    SIEVE_CHECK_LE(head.count, a.slot_stride) << "slot_stride below a head's valid slots";
    if (a.num_queries > 0) {
      if (parallel) {
        window_signals_gemm(a, head, num_heads);
      } else {
        window_signals(a, head, num_heads);
      }
    }
    key_value_signals(a, head);
  }
}

void run_copy_rows(const CopyRowsArgs& a) {
  SIEVE_CHECK(a.dst.ndim() == 2 && a.src.ndim() == 2) << "copy_rows takes 2-D views";
  SIEVE_CHECK(a.dst.stride(1) == 1 && a.src.stride(1) == 1) << "rows must be contiguous";
  SIEVE_CHECK_EQ(a.dst.size(1), a.src.size(1));
  SIEVE_CHECK(a.dst.dtype() == a.src.dtype());
  SIEVE_CHECK_EQ(a.dst_rows.numel(), a.src_rows.numel());
  const size_t row_bytes = a.src.size(1) * dtype_size(a.src.dtype());
  const int32_t* dst_rows = a.dst_rows.data<int32_t>();
  const int32_t* src_rows = a.src_rows.data<int32_t>();
  for (int64_t i = 0; i < a.dst_rows.numel(); ++i) {
    SIEVE_CHECK(dst_rows[i] >= 0 && dst_rows[i] < a.dst.size(0) && src_rows[i] >= 0 &&
                src_rows[i] < a.src.size(0))
        << "copy_rows: row " << src_rows[i] << " -> " << dst_rows[i];
    std::memcpy(static_cast<std::byte*>(a.dst.raw()) +
                    dst_rows[i] * a.dst.stride(0) * dtype_size(a.dst.dtype()),
                static_cast<const std::byte*>(a.src.raw()) +
                    src_rows[i] * a.src.stride(0) * dtype_size(a.src.dtype()),
                row_bytes);
  }
}

}  // namespace

void ref::kv_signals(const KvSignalArgs& args) { run_kv_signals(args, /*parallel=*/false); }
void kv_signals(const KvSignalArgs& args) { run_kv_signals(args, /*parallel=*/true); }
void copy_rows(const CopyRowsArgs& args) { run_copy_rows(args); }

}  // namespace sieve::kernels::cpu
