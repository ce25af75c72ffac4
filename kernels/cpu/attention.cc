// Paged attention and KV writes on the CPU: the reference for the CUDA kernels, and the
// production path of the CPU backend (parallel over query rows and heads).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged.h"
#include "kernels/cpu/rows.h"

namespace sieve::kernels::cpu {
namespace {

// Where one KV head's slots of a sequence live: the page table row and the arena geometry, and
// its per-slot logit bias (null when the sequence reads none).
struct PagedHead {
  const std::byte* arena;
  const KvCacheLayout* layout;
  const int32_t* pages;  // the sequence's page ids
  int layer;
  int kv_head;
  const float* bias;  // AttentionArgs::slot_bias or null

  const float* slot(int64_t j, int kv) const {  // kv: 0 = K, 1 = V
    return reinterpret_cast<const float*>(arena +
                                          slot_offset(*layout, pages, layer, kv, kv_head, j));
  }
  float slot_bias(int64_t j) const {
    const int tpp = layout->tokens_per_page;
    return bias[((static_cast<size_t>(layer) * layout->num_pages + pages[j / tpp]) *
                     layout->num_kv_heads +
                 kv_head) *
                    tpp +
                j % tpp];
  }
};

void check_layout(const KvCacheLayout& layout, const TensorView& arena, int layer) {
  SIEVE_CHECK(layout.dtype == DType::kF32) << "CPU KV cache is f32, got "
                                           << dtype_name(layout.dtype);
  SIEVE_CHECK_GE(arena.nbytes(), layout.arena_bytes());
  SIEVE_CHECK(layer >= 0 && layer < layout.num_layers) << "layer " << layer;
}

// Valid slots of a head below the physical limit `limit`: [0, prefix_end) and [gap_end, limit).
int64_t virtual_limit(int64_t limit, int64_t prefix_end, int64_t gap_end) {
  return std::min(prefix_end, limit) + std::max<int64_t>(0, limit - gap_end);
}

// The slots one query row reads: the first `count` virtual slots (AttentionArgs), or the first
// `count` entries of a selection; physical numbering skips the dead gap [prefix_end, gap_end).
struct RowSlots {
  int64_t prefix_end;
  int64_t gap_end;
  int64_t count;
  const int32_t* selected;  // null: no selection

  int64_t slot(int64_t i) const {  // the i-th slot read, physical
    const int64_t v = selected ? selected[i] : i;
    return v < prefix_end ? v : gap_end + (v - prefix_end);
  }
};

// One query row against its slots of one KV head: out = softmax(q·Kᵀ·scale + bias)·V.
void attend(const float* q, float* out, const PagedHead& head, const RowSlots& slots, int head_dim,
            float scale, std::vector<float>& scores) {
  std::memset(out, 0, head_dim * sizeof(float));
  const int64_t n = slots.count;
  if (n <= 0) return;
  scores.resize(n);
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = slots.slot(i);
    const float* k = head.slot(j, 0);
    float dot = 0;
    // simd: lets the compiler reassociate the sum into vector lanes (no -ffast-math needed).
#pragma omp simd reduction(+ : dot)
    for (int d = 0; d < head_dim; ++d) dot += q[d] * k[d];
    scores[i] = dot * scale;
    if (head.bias) scores[i] += head.slot_bias(j);
    if (scores[i] > max || std::isnan(scores[i])) max = scores[i];  // a NaN score propagates
  }
  if (max == -INFINITY) return;  // every slot dropped by a -inf bias
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    scores[i] = std::exp(scores[i] - max);
    sum += scores[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) {
    const float p = scores[i] * inv;
    const float* v = head.slot(slots.slot(i), 1);
#pragma omp simd
    for (int d = 0; d < head_dim; ++d) out[d] += p * v[d];
  }
}

// Loud failure for a malformed selection (a programming error of the policy that built it):
// each (sequence, KV head) list must ascend strictly within the head's valid virtual slots.
void check_selection(const AttentionArgs& a, const int32_t* head_lens, const int32_t* gap_ends) {
  const int64_t num_seqs = a.kv_lens.numel();
  const int kv_heads = a.layout.num_kv_heads;
  SIEVE_CHECK_EQ(a.selected_indptr.numel(), num_seqs * kv_heads + 1)
      << "selected_indptr has one entry per (sequence, KV head) plus one";
  const int32_t* indptr = a.selected_indptr.data<int32_t>();
  const int32_t* slots = a.selected_slots.data<int32_t>();
  SIEVE_CHECK(indptr[0] == 0 && indptr[num_seqs * kv_heads] <= a.selected_slots.numel())
      << "selected_indptr spans [" << indptr[0] << ", " << indptr[num_seqs * kv_heads] << ") of "
      << a.selected_slots.numel() << " selected slots";
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int32_t len = a.kv_lens.data<int32_t>()[s];
    for (int h = 0; h < kv_heads; ++h) {
      const int64_t valid =
          head_lens
              ? virtual_limit(len, head_lens[(s * a.layout.num_layers + a.layer) * kv_heads + h],
                              gap_ends[s])
              : len;
      const int64_t list = s * kv_heads + h;
      SIEVE_CHECK_LE(indptr[list], indptr[list + 1]) << "selected_indptr must not decrease";
      for (int32_t i = indptr[list]; i < indptr[list + 1]; ++i) {
        SIEVE_CHECK(slots[i] >= 0 && slots[i] < valid &&
                    (i == indptr[list] || slots[i] > slots[i - 1]))
            << "selected slots of sequence " << s << ", KV head " << h
            << " must ascend strictly within [0, " << valid << "): slot " << slots[i]
            << " at position " << i - indptr[list];
      }
    }
  }
}

// Runs attention for the query rows of every sequence; `parallel` picks the production loop.
void run_attention(const AttentionArgs& a, bool parallel) {
  check_layout(a.layout, a.arena, a.layer);
  SIEVE_CHECK_EQ(a.q.ndim(), 3);
  SIEVE_CHECK_EQ(a.q.size(2), a.layout.head_dim);
  SIEVE_CHECK_EQ(a.q.size(1) % a.layout.num_kv_heads, 0);
  SIEVE_CHECK(a.q.stride(2) == 1 && a.out.stride(2) == 1);
  const int num_heads = static_cast<int>(a.q.size(1));
  const int group = num_heads / a.layout.num_kv_heads;
  const int64_t num_seqs = a.kv_lens.numel();
  const int32_t* qo_indptr = a.qo_indptr.data<int32_t>();
  const int32_t* kv_indptr = a.kv_indptr.data<int32_t>();
  const int32_t* kv_indices = a.kv_indices.data<int32_t>();
  const int32_t* kv_lens = a.kv_lens.data<int32_t>();
  const int32_t* head_lens = a.kv_head_lens.empty() ? nullptr : a.kv_head_lens.data<int32_t>();
  const int32_t* gap_ends = a.kv_gap_ends.empty() ? nullptr : a.kv_gap_ends.data<int32_t>();
  SIEVE_CHECK_EQ(head_lens == nullptr, gap_ends == nullptr)
      << "kv_head_lens and kv_gap_ends come together";
  const float* bias = nullptr;
  const int32_t* bias_seqs = nullptr;
  if (!a.slot_bias.empty()) {
    SIEVE_CHECK_EQ(a.slot_bias.dtype(), DType::kF32);
    SIEVE_CHECK_GE(a.slot_bias.numel(), static_cast<int64_t>(a.layout.num_layers) *
                                            a.layout.num_pages * a.layout.num_kv_heads *
                                            a.layout.tokens_per_page);
    bias = a.slot_bias.data<float>();
    if (!a.slot_bias_seqs.empty()) {
      SIEVE_CHECK_EQ(a.slot_bias_seqs.numel(), num_seqs);
      bias_seqs = a.slot_bias_seqs.data<int32_t>();
    }
  }
  SIEVE_CHECK(a.slot_bias_seqs.empty() || bias) << "slot_bias_seqs without slot_bias";
  const int32_t* selected_indptr = nullptr;
  const int32_t* selected_slots = a.selected_slots.data<int32_t>();
  if (!a.selected_indptr.empty()) {
    check_selection(a, head_lens, gap_ends);
    selected_indptr = a.selected_indptr.data<int32_t>();
  }
  SIEVE_CHECK(a.selected_slots.empty() || selected_indptr) << "selected_slots without an indptr";
  const int64_t num_tokens = a.q.size(0);

  // Map each query row to its sequence once.
  std::vector<int32_t> seq_of_row(num_tokens);
  for (int64_t s = 0; s < num_seqs; ++s) {
    for (int32_t t = qo_indptr[s]; t < qo_indptr[s + 1]; ++t) seq_of_row[t] = static_cast<int32_t>(s);
  }
  // Parallel only when the step reads enough keys to pay for the threads' fork and barrier.
  int64_t key_reads = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    key_reads += int64_t{kv_lens[s]} * (qo_indptr[s + 1] - qo_indptr[s]);
  }
  const bool worth = parallel && key_reads * num_heads * a.layout.head_dim >= (1 << 16);
#pragma omp parallel if (worth)
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 4)
    for (int64_t work = 0; work < num_tokens * num_heads; ++work) {
      const int64_t t = work / num_heads;
      const int h = static_cast<int>(work % num_heads);
      const int32_t s = seq_of_row[t];
      const int kv_head = h / group;
      const int64_t q_len = qo_indptr[s + 1] - qo_indptr[s];
      const int64_t limit = kv_lens[s] - q_len + (t - qo_indptr[s]) + 1;
      SIEVE_CHECK_LE(limit, static_cast<int64_t>(kv_indptr[s + 1] - kv_indptr[s]) *
                                a.layout.tokens_per_page);
      RowSlots slots{limit, limit, limit, nullptr};
      if (head_lens) {
        slots.prefix_end =
            head_lens[(s * a.layout.num_layers + a.layer) * a.layout.num_kv_heads + kv_head];
        slots.gap_end = gap_ends[s];
        SIEVE_CHECK_LE(slots.prefix_end, slots.gap_end);
        slots.count = virtual_limit(limit, slots.prefix_end, slots.gap_end);
      }
      if (selected_indptr) {
        const int64_t list = int64_t{s} * a.layout.num_kv_heads + kv_head;
        if (selected_indptr[list] < selected_indptr[list + 1]) {
          // The causal limit still applies: the row reads the entries below it.
          const int32_t* begin = selected_slots + selected_indptr[list];
          slots.selected = begin;
          slots.count =
              std::lower_bound(begin, selected_slots + selected_indptr[list + 1], slots.count) -
              begin;
        }
      }
      const float* head_bias = bias && (!bias_seqs || bias_seqs[s] != 0) ? bias : nullptr;
      const PagedHead head{static_cast<const std::byte*>(a.arena.raw()), &a.layout,
                           kv_indices + kv_indptr[s], a.layer, kv_head, head_bias};
      attend(a.q.data<float>() + t * a.q.stride(0) + h * a.q.stride(1),
             a.out.data<float>() + t * a.out.stride(0) + h * a.out.stride(1), head, slots,
             a.layout.head_dim, a.scale, scores);
    }
  }
}

void run_write_kv(const KvWriteArgs& a, bool parallel) {
  check_layout(a.layout, a.arena, a.layer);
  check_rows(a.k);
  check_rows(a.v);
  SIEVE_CHECK_EQ(a.k.size(1), a.layout.num_kv_heads);
  SIEVE_CHECK_EQ(a.k.size(2), a.layout.head_dim);
  const int tpp = a.layout.tokens_per_page;
  const size_t row_bytes = a.layout.head_dim * sizeof(float);
  auto* arena = static_cast<std::byte*>(a.arena.raw());
  const int32_t* slots = a.slot_mapping.data<int32_t>();
#pragma omp parallel for schedule(static) if (parallel && a.k.size(0) >= 16)
  for (int64_t t = 0; t < a.k.size(0); ++t) {
    const int32_t slot = slots[t];
    if (slot < 0) continue;
    const int64_t page = slot / tpp;
    SIEVE_CHECK_LT(page, a.layout.num_pages);
    std::byte* base = arena + (static_cast<size_t>(a.layer) * a.layout.num_pages + page) *
                                  a.layout.layer_page_bytes();
    for (int h = 0; h < a.layout.num_kv_heads; ++h) {
      const size_t k_offset = (static_cast<size_t>(h) * tpp + slot % tpp) * row_bytes;
      const size_t v_offset =
          (static_cast<size_t>(a.layout.num_kv_heads + h) * tpp + slot % tpp) * row_bytes;
      std::memcpy(base + k_offset, row_ptr<float>(a.k, t * a.k.size(1) + h), row_bytes);
      std::memcpy(base + v_offset, row_ptr<float>(a.v, t * a.v.size(1) + h), row_bytes);
    }
  }
}

}  // namespace

void copy_pages(const PageCopyArgs& a) {
  SIEVE_CHECK_EQ(a.src_pages.numel(), a.dst_pages.numel());
  SIEVE_CHECK_GE(a.arena.nbytes(), a.layout.arena_bytes());
  auto* arena = static_cast<std::byte*>(a.arena.raw());
  const size_t page_bytes = a.layout.layer_page_bytes();
  for (int64_t i = 0; i < a.src_pages.numel(); ++i) {
    const int32_t src = a.src_pages.data<int32_t>()[i], dst = a.dst_pages.data<int32_t>()[i];
    SIEVE_CHECK(src >= 0 && src < a.layout.num_pages && dst >= 0 && dst < a.layout.num_pages);
    for (int l = 0; l < a.layout.num_layers; ++l) {
      const size_t layer_base = static_cast<size_t>(l) * a.layout.num_pages;
      std::memcpy(arena + (layer_base + dst) * page_bytes, arena + (layer_base + src) * page_bytes,
                  page_bytes);
    }
  }
}

void compact_kv(const CompactArgs& a) {
  const KvCacheLayout& layout = a.layout;
  SIEVE_CHECK_EQ(a.keep_slots.ndim(), 3);
  SIEVE_CHECK_EQ(a.keep_slots.size(0), layout.num_layers);
  SIEVE_CHECK_EQ(a.keep_slots.size(1), layout.num_kv_heads);
  const int64_t max_keep = a.keep_slots.size(2);
  const int64_t capacity = a.page_table.numel() * layout.tokens_per_page;
  const size_t row_bytes = layout.head_dim * dtype_size(layout.dtype);
  auto* arena = static_cast<std::byte*>(a.arena.raw());
  const int32_t* pages = a.page_table.data<int32_t>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int l = 0; l < layout.num_layers; ++l) {
    for (int h = 0; h < layout.num_kv_heads; ++h) {
      const int32_t count = a.keep_counts.data<int32_t>()[l * layout.num_kv_heads + h];
      const int32_t* keep = a.keep_slots.data<int32_t>() + (l * layout.num_kv_heads + h) * max_keep;
      SIEVE_CHECK(count >= 0 && count <= max_keep);
      for (int32_t j = 0; j < count; ++j) {
        SIEVE_CHECK(keep[j] >= j && keep[j] < capacity && (j == 0 || keep[j] > keep[j - 1]))
            << "keep slots must ascend within the sequence: slot " << keep[j] << " at " << j;
        if (keep[j] == j) continue;
        for (int kv = 0; kv < 2; ++kv) {
          std::memmove(arena + slot_offset(layout, pages, l, kv, h, j),
                       arena + slot_offset(layout, pages, l, kv, h, keep[j]), row_bytes);
        }
      }
    }
  }
}

void ref::attention(const AttentionArgs& args) { run_attention(args, /*parallel=*/false); }
void ref::write_kv(const KvWriteArgs& args) { run_write_kv(args, /*parallel=*/false); }
void attention(const AttentionArgs& args) { run_attention(args, /*parallel=*/true); }
void write_kv(const KvWriteArgs& args) { run_write_kv(args, /*parallel=*/true); }

}  // namespace sieve::kernels::cpu
