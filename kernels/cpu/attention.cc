// Paged attention and KV writes on the CPU: the reference for the CUDA kernels, and the
// production path of the CPU backend (parallel over query rows and heads).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/kv_quant.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged.h"
#include "kernels/cpu/rows.h"

namespace sieve::kernels::cpu {
namespace {

// Where one KV head's slots of a sequence live (its pages read as its format), and its per-slot
// logit bias (null when the sequence reads none).
struct PagedHead {
  const PagedSlots* slots;
  const KvCacheLayout* layout;  // the batch's layout, which indexes the bias
  const int32_t* pages;         // the sequence's page ids
  int layer;
  int kv_head;
  const float* bias;  // AttentionArgs::slot_bias or null
  // The sequence's K and V of this layer already in f32, [K | V][kv_head][slot][head_dim] over
  // `dense_slots` slots; null: read (and dequantize) the pages.
  const float* dense;
  int64_t dense_slots;

  // kv: 0 = K, 1 = V; dequantized into `scratch` (head_dim floats) where the format needs it.
  const float* slot(int64_t j, int kv, float* scratch) const {
    if (dense) {
      const int head_dim = layout->head_dim;
      return dense + ((static_cast<int64_t>(kv) * layout->num_kv_heads + kv_head) * dense_slots +
                      j) * head_dim;
    }
    return slots->read(layer, kv, kv_head, j, scratch);
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

// One query row against its slots of one KV head: out = softmax(q·Kᵀ·scale + bias)·V, in f32
// whatever the format (a quantized slot is dequantized into `scratch` first).
void attend(const float* q, float* out, const PagedHead& head, const RowSlots& slots, int head_dim,
            float scale, std::vector<float>& scores, float* scratch) {
  std::memset(out, 0, head_dim * sizeof(float));
  const int64_t n = slots.count;
  if (n <= 0) return;
  scores.resize(n);
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = slots.slot(i);
    const float* k = head.slot(j, 0, scratch);
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
    const float* v = head.slot(slots.slot(i), 1, scratch);
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

// Each sequence's layout: of its kv_formats entry, or `layout`'s format when there are none.
std::vector<KvCacheLayout> sequence_layouts(const KvCacheLayout& layout,
                                            const TensorView& kv_formats, int64_t num_seqs) {
  if (kv_formats.empty()) return std::vector<KvCacheLayout>(num_seqs, layout);
  SIEVE_CHECK_EQ(kv_formats.numel(), num_seqs) << "kv_formats has one entry per sequence";
  std::vector<KvCacheLayout> of_format(std::size(kvcache::kKvFormats));
  std::vector<KvCacheLayout> layouts(num_seqs);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int32_t id = kv_formats.data<int32_t>()[s];
    SIEVE_CHECK(id >= 0 && id < static_cast<int32_t>(of_format.size()))
        << "sequence " << s << " has no KV format " << id;
    KvCacheLayout& l = of_format[id];
    if (l.tokens_per_page == 0) {
      l = layout.for_format(static_cast<kvcache::KvFormatId>(id));
      SIEVE_CHECK_GT(l.tokens_per_page, 0)
          << kvcache::kv_format(l.kv_format()).name << ": no token fits in a page";
    }
    layouts[s] = l;
  }
  return layouts;
}

// Runs attention for the query rows of every sequence; `parallel` picks the production loop.
void run_attention(const AttentionArgs& a, bool parallel) {
  check_kv_layout(a.layout, a.arena, a.layer);
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
  const std::vector<KvCacheLayout> layouts = sequence_layouts(a.layout, a.kv_formats, num_seqs);
  const auto* arena = static_cast<const std::byte*>(a.arena.raw());
  std::vector<PagedSlots> seq_slots;
  seq_slots.reserve(num_seqs);
  for (int64_t s = 0; s < num_seqs; ++s) {
    seq_slots.emplace_back(arena, layouts[s], kv_indices + kv_indptr[s]);
    SIEVE_CHECK(!bias || (bias_seqs && bias_seqs[s] == 0) ||
                layouts[s].tokens_per_page == a.layout.tokens_per_page)
        << "sequence " << s << " reads slot_bias but is not of the layout's format";
  }
  // The production path dequantizes a quantized (or bf16) sequence's slots of this layer once,
  // not once per query row and head that reads them; the values are the same, so is the result.
  std::vector<std::vector<float>> dense(num_seqs);
  if (parallel) {
    std::vector<std::pair<int32_t, int32_t>> work;  // (sequence, K|V x KV head)
    const int hkv = a.layout.num_kv_heads, head_dim = a.layout.head_dim;
    for (int64_t s = 0; s < num_seqs; ++s) {
      if (layouts[s].kv_format() == kvcache::KvFormatId::kF32 || kv_lens[s] <= 0) continue;
      dense[s].resize(static_cast<size_t>(2) * hkv * kv_lens[s] * head_dim);
      for (int i = 0; i < 2 * hkv; ++i) work.emplace_back(static_cast<int32_t>(s), i);
    }
#pragma omp parallel for schedule(dynamic, 1) if (work.size() > 1)
    for (size_t w = 0; w < work.size(); ++w) {
      const auto [s, i] = work[w];
      const int64_t n = kv_lens[s];
      float* out = dense[s].data() + static_cast<size_t>(i) * n * head_dim;
      for (int64_t j = 0; j < n; ++j) {
        float* row = out + j * head_dim;
        const float* got = seq_slots[s].read(a.layer, i / hkv, i % hkv, j, row);
        if (got != row) std::memcpy(row, got, head_dim * sizeof(float));
      }
    }
  }

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
    std::vector<float> scores, scratch(a.layout.head_dim);
#pragma omp for schedule(dynamic, 4)
    for (int64_t work = 0; work < num_tokens * num_heads; ++work) {
      const int64_t t = work / num_heads;
      const int h = static_cast<int>(work % num_heads);
      const int32_t s = seq_of_row[t];
      const int kv_head = h / group;
      const int64_t q_len = qo_indptr[s + 1] - qo_indptr[s];
      const int64_t limit = kv_lens[s] - q_len + (t - qo_indptr[s]) + 1;
      SIEVE_CHECK_LE(limit, static_cast<int64_t>(kv_indptr[s + 1] - kv_indptr[s]) *
                                layouts[s].tokens_per_page);
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
      const PagedHead head{&seq_slots[s],
                           &a.layout,
                           kv_indices + kv_indptr[s],
                           a.layer,
                           kv_head,
                           head_bias,
                           dense[s].empty() ? nullptr : dense[s].data(),
                           kv_lens[s]};
      attend(a.q.data<float>() + t * a.q.stride(0) + h * a.q.stride(1),
             a.out.data<float>() + t * a.out.stride(0) + h * a.out.stride(1), head, slots,
             a.layout.head_dim, a.scale, scores, scratch.data());
    }
  }
}

void run_write_kv(const KvWriteArgs& a, bool parallel) {
  check_kv_layout(a.layout, a.arena, a.layer);
  check_rows(a.k);
  check_rows(a.v);
  SIEVE_CHECK_EQ(a.k.size(1), a.layout.num_kv_heads);
  SIEVE_CHECK_EQ(a.k.size(2), a.layout.head_dim);
  SIEVE_CHECK_EQ(a.kv_formats.empty(), a.qo_indptr.empty()) << "kv_formats come with qo_indptr";
  const int64_t num_tokens = a.k.size(0);
  // Each token's sequence layout: its format decides tokens per page and encoding.
  std::vector<int32_t> seq_of_token(num_tokens, 0);
  std::vector<PagedSlots> seq_slots;
  auto* arena = static_cast<std::byte*>(a.arena.raw());
  if (a.kv_formats.empty()) {
    seq_slots.emplace_back(arena, a.layout, nullptr);
  } else {
    const int64_t num_seqs = a.kv_formats.numel();
    SIEVE_CHECK_EQ(a.qo_indptr.numel(), num_seqs + 1);
    const int32_t* qo_indptr = a.qo_indptr.data<int32_t>();
    SIEVE_CHECK_LE(qo_indptr[num_seqs], num_tokens);
    for (const KvCacheLayout& l : sequence_layouts(a.layout, a.kv_formats, num_seqs)) {
      seq_slots.emplace_back(arena, l, nullptr);
    }
    for (int64_t s = 0; s < num_seqs; ++s) {
      for (int32_t t = qo_indptr[s]; t < qo_indptr[s + 1]; ++t)
        seq_of_token[t] = static_cast<int32_t>(s);
    }
  }
  const int num_kv_heads = a.layout.num_kv_heads, head_dim = a.layout.head_dim;
  const int32_t* slots = a.slot_mapping.data<int32_t>();
#pragma omp parallel for schedule(static) if (parallel && num_tokens >= 16)
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int32_t slot = slots[t];
    if (slot < 0) continue;
    const PagedSlots& seq = seq_slots[seq_of_token[t]];
    const int tpp = seq.tokens_per_page();
    const int64_t page = slot / tpp;
    SIEVE_CHECK_LT(page, a.layout.num_pages);
    for (int kv = 0; kv < 2; ++kv) {
      const TensorView& x = kv == 0 ? a.k : a.v;
      for (int h = 0; h < num_kv_heads; ++h) {
        quantize_vector(seq.format(), row_ptr<float>(x, t * x.size(1) + h), head_dim,
                        arena + seq.page_data_offset(a.layer, page, kv, h, slot % tpp),
                        arena + seq.page_meta_offset(a.layer, page, kv, h, slot % tpp));
      }
    }
  }
}

}  // namespace

void check_kv_layout(const KvCacheLayout& layout, const TensorView& arena, int layer) {
  const kvcache::KvFormat& format = kvcache::kv_format(layout.kv_format());
  SIEVE_CHECK(layout.dtype == format.dtype)
      << "KV layout of " << format.name << " with elements of " << dtype_name(layout.dtype);
  SIEVE_CHECK_GT(layout.tokens_per_page, 0);
  SIEVE_CHECK_LE(2ull * layout.num_kv_heads * layout.tokens_per_page *
                     format.bytes_per_token_head(layout.head_dim),
                 layout.layer_page_bytes())
      << "more " << format.name << " tokens per page than fit";
  SIEVE_CHECK_GE(arena.nbytes(), layout.arena_bytes());
  SIEVE_CHECK(layer >= 0 && layer < layout.num_layers) << "layer " << layer;
}

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
  check_kv_layout(layout, a.arena, 0);
  const int64_t capacity = a.page_table.numel() * layout.tokens_per_page;
  auto* arena = static_cast<std::byte*>(a.arena.raw());
  const PagedSlots seq(arena, layout, a.page_table.data<int32_t>());
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
        for (int kv = 0; kv < 2; ++kv) {  // the elements, then the scales (if any)
          std::memmove(arena + seq.data_offset(l, kv, h, j),
                       arena + seq.data_offset(l, kv, h, keep[j]), seq.data_bytes());
          std::memmove(arena + seq.meta_offset(l, kv, h, j),
                       arena + seq.meta_offset(l, kv, h, keep[j]), seq.meta_bytes());
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
