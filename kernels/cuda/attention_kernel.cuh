#pragma once
// The paged attention kernel body (see attention.cuh for the decomposition). Included only by
// the files under kernels/cuda/instances/, one template instance each.

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/check.h"
#include "kernels/cuda/kv_quant.cuh"

namespace sieve::kernels::cuda::attention_impl {

__device__ __forceinline__ void cp_async16(void* smem, const void* global, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;  // 0: zero-fill (slots past the end must not be NaN)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global),
               "r"(src_bytes));
}
// 4 bytes (a slot's bias); .ca: the .cg form takes 16-byte copies only.
__device__ __forceinline__ void cp_async4(void* smem, const void* global, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(global),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// The sequence that owns work item `item`: the largest s with item_offset[s] <= item.
__device__ __forceinline__ int find_sequence(const int32_t* item_offset, int num_seqs, int item) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (item_offset[mid] <= item) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// The number of entries of an ascending list below `limit`.
__device__ __forceinline__ int count_below(const int32_t* list, int n, int limit) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (list[mid] < limit) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// A block's work item (shared by the FMA and tensor-core kernels): its sequence, the head's valid
// slots ([0, prefix) and [gap, ...), physical limits clamped to the pages), its chunk of `rows`
// packed query rows and the virtual slots [kv_start, kv_end) of its split up to the chunk's last
// causal limit. With kHooks and a selection, [kv_start, kv_end) and the row limits count
// positions in the selection instead (attention.cuh).
template <bool kHooks>
struct WorkItem {
  int seq;
  int q_begin, q_len, len, capacity, prefix, gap;
  const int32_t* pages;
  int packed_rows, first_row;
  int kv_start, kv_end;
  const int32_t* selected;  // kHooks: the head's selected virtual slots; null: all
  int num_selected;
  bool bias;  // kHooks: whether the sequence reads Launch::slot_bias

  // Causal limit (exclusive) of a packed row: virtual, or a position in the selection.
  __device__ __forceinline__ int row_limit(const Launch& p, int packed) const {
    const int limit = virtual_limit(min(len - q_len + packed / p.group + 1, capacity), prefix, gap);
    if constexpr (kHooks) {
      if (selected) return count_below(selected, num_selected, limit);
    }
    return limit;
  }
  // The virtual slot at iteration index `i` (< kv_end).
  __device__ __forceinline__ int virtual_slot(int i) const {
    if constexpr (kHooks) {
      if (selected) return selected[i];
    }
    return i;
  }
};

template <bool kHooks>
__device__ __forceinline__ WorkItem<kHooks> work_item(const Launch& p, const Plan& plan, int item,
                                                      int kv_head, int rows) {
  WorkItem<kHooks> w;
  const int s = find_sequence(p.item_offset, p.num_seqs, item);
  const int splits = p.splits[s];
  const int local = item - p.item_offset[s];
  const int chunk = local / splits, split = local % splits;
  w.seq = s;
  w.q_begin = p.qo_indptr[s];
  w.q_len = p.qo_indptr[s + 1] - w.q_begin;
  w.len = p.kv_lens[s];
  w.pages = p.kv_indices + p.kv_indptr[s];
  w.capacity = (p.kv_indptr[s + 1] - p.kv_indptr[s]) * p.tokens_per_page;
  w.prefix = w.len;
  w.gap = w.len;
  if (p.kv_head_lens) {
    w.prefix = p.kv_head_lens[(static_cast<int64_t>(s) * p.num_layers + p.layer) * p.num_kv_heads +
                              kv_head];
    w.gap = p.kv_gap_ends[s];
  }
  w.selected = nullptr;
  w.num_selected = 0;
  w.bias = false;
  if constexpr (kHooks) {
    if (p.selected_indptr) {
      const int64_t list = static_cast<int64_t>(s) * p.num_kv_heads + kv_head;
      const int begin = p.selected_indptr[list];
      w.num_selected = p.selected_indptr[list + 1] - begin;
      if (w.num_selected > 0) w.selected = p.selected_slots + begin;
    }
    w.bias = p.slot_bias && (!p.slot_bias_seqs || p.slot_bias_seqs[s] != 0);
  }
  w.packed_rows = w.q_len * p.group;
  w.first_row = chunk * rows;
  const int last_row = min(w.first_row + rows, w.packed_rows) - 1;
  const int64_t split_begin = static_cast<int64_t>(split) * plan.split_len;
  w.kv_start = static_cast<int>(split_begin);
  w.kv_end =
      static_cast<int>(max(split_begin, min(split_begin + plan.split_len,
                                            static_cast<int64_t>(w.row_limit(p, last_row)))));
  return w;
}

// Issues the copies of K and V at iteration indices [tile_start, tile_start + kSlots) (virtual
// slots, or positions in a selection) into one stage (rows padded to padded_row<KvT>), and with
// kHooks their biases (zeros where the sequence reads none); indices at or past `kv_end` are
// zero-filled.
template <typename KvT, int kSlots, bool kHooks>
__device__ __forceinline__ void load_tile(const Launch& p, const WorkItem<kHooks>& w, int kv_head,
                                          int head_dim, int tile_start, int kv_end, KvT* k_stage,
                                          KvT* v_stage, float* bias_stage) {
  constexpr int kVec = kVec16<KvT>;
  const int vecs_per_row = head_dim / kVec;
  const int row = padded_row<KvT>(head_dim);
  const KvT* arena = static_cast<const KvT*>(p.arena);
  const int64_t v_offset = static_cast<int64_t>(p.num_kv_heads) * p.tokens_per_page * head_dim;
  // Fully unrolled where head_dim is a compile-time constant (the tuned instances): the copies
  // then issue back to back.
#pragma unroll
  for (int c = threadIdx.x; c < kSlots * vecs_per_row; c += kThreads) {
    const int slot_local = c / vecs_per_row, vec = c % vecs_per_row;
    const int index = tile_start + slot_local;
    const bool valid = index < kv_end;
    const int virtual_slot = valid ? w.virtual_slot(index) : index;
    const int slot = virtual_slot < w.prefix ? virtual_slot : w.gap + (virtual_slot - w.prefix);
    const KvT* k_src = arena;
    if (valid) {
      const int64_t page = w.pages[slot / p.tokens_per_page];
      k_src = arena + (static_cast<int64_t>(p.layer) * p.num_pages + page) * p.layer_page_elems +
              (static_cast<int64_t>(kv_head) * p.tokens_per_page + slot % p.tokens_per_page) *
                  head_dim +
              vec * kVec;
    }
    cp_async16(k_stage + slot_local * row + vec * kVec, k_src, valid);
    cp_async16(v_stage + slot_local * row + vec * kVec, valid ? k_src + v_offset : arena, valid);
    if constexpr (kHooks) {
      if (vec == 0) {
        const bool biased = valid && w.bias;
        const void* bias_src = p.arena;  // any mapped address: nothing is read
        if (biased) {
          const int64_t page = w.pages[slot / p.tokens_per_page];
          bias_src =
              p.slot_bias +
              ((static_cast<int64_t>(p.layer) * p.num_pages + page) * p.num_kv_heads + kv_head) *
                  p.tokens_per_page +
              slot % p.tokens_per_page;
        }
        cp_async4(bias_stage + slot_local, bias_src, biased);
      }
    }
  }
}

// Quantized formats (KvQuant). A tile's K and V at iteration indices [tile_start, tile_start +
// kSlots) are dequantized into f32 rows of shared memory (padded_row<float>), zeros past
// `kv_end`, in two halves: fetch_quant_tile issues a thread's 4-byte loads of elements and the
// bytes of their scales into registers (QuantWords: kItems (slot, word) items of K and of V), and
// store_quant_tile, called once the current tile has been scored, scales them into the other
// stage. The loads of the next tile are thus in flight while the current one is computed, as the
// cp.async stages of the other instances are (the values pass through registers to be scaled, so
// cp.async cannot place them).
template <int kItems>
struct QuantWords {
  uint32_t word[2][kItems];
  uint8_t scale_lo[2][kItems], scale_hi[2][kItems], zero[2][kItems];
};

template <int kSlots, int kItems>
__device__ __forceinline__ void fetch_quant_tile(const Launch& p, const WorkItem<false>& w,
                                                 int kv_head, int head_dim, int tile_start,
                                                 int kv_end, QuantWords<kItems>& f) {
  const int format = p.format;
  const int data_bytes = kv_data_bytes(format, head_dim);
  const int meta_bytes = kv_meta_bytes(format, head_dim);
  const int words = data_bytes / 4;
  const int groups = (head_dim + 31) / 32;
  const uint8_t* arena = static_cast<const uint8_t*>(p.arena);
  const int64_t v_rows = static_cast<int64_t>(p.num_kv_heads) * p.tokens_per_page;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
#pragma unroll
    for (int kv = 0; kv < 2; ++kv) {  // zeros: an invalid slot's values are 0 · 0
      f.word[kv][i] = 0;
      f.scale_lo[kv][i] = f.scale_hi[kv][i] = f.zero[kv][i] = 0;
    }
    const int c = threadIdx.x + i * kThreads;
    if (c >= kSlots * words) continue;
    const int slot_local = c / words, word = c % words;
    const int index = tile_start + slot_local;
    if (index >= kv_end) continue;
    const int virtual_slot = w.virtual_slot(index);
    const int slot = virtual_slot < w.prefix ? virtual_slot : w.gap + (virtual_slot - w.prefix);
    const int64_t page_base =
        (static_cast<int64_t>(p.layer) * p.num_pages + w.pages[slot / p.tokens_per_page]) *
        p.layer_page_elems;
    const int64_t k_row =
        static_cast<int64_t>(kv_head) * p.tokens_per_page + slot % p.tokens_per_page;
    const int g = format == kKvInt4 ? word / 4 : 0;  // an int4 word is 8 of a group's 32
#pragma unroll
    for (int kv = 0; kv < 2; ++kv) {
      const int64_t r = k_row + kv * v_rows;
      f.word[kv][i] =
          *reinterpret_cast<const uint32_t*>(arena + page_base + r * data_bytes + 4 * word);
      const uint8_t* meta = arena + page_base + p.meta_plane + r * meta_bytes;
      f.scale_lo[kv][i] = meta[2 * g];
      f.scale_hi[kv][i] = meta[2 * g + 1];
      if (format == kKvInt4) f.zero[kv][i] = meta[2 * groups + g];
    }
  }
}

template <int kSlots, int kItems>
__device__ __forceinline__ void store_quant_tile(const Launch& p, int head_dim,
                                                 const QuantWords<kItems>& f, float* k_stage,
                                                 float* v_stage) {
  const int format = p.format;
  const int words = kv_data_bytes(format, head_dim) / 4;
  const int per_word = format == kKvInt4 ? 8 : 4;  // elements in 4 bytes
  const int row = padded_row<float>(head_dim);
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int c = threadIdx.x + i * kThreads;
    if (c >= kSlots * words) continue;
    const int slot_local = c / words, word = c % words;
#pragma unroll
    for (int kv = 0; kv < 2; ++kv) {
      float* dst = (kv == 0 ? k_stage : v_stage) + slot_local * row + word * per_word;
      const uint32_t q = f.word[kv][i];
      const float scale = __half2float(__ushort_as_half(static_cast<unsigned short>(
          f.scale_lo[kv][i] | (static_cast<unsigned>(f.scale_hi[kv][i]) << 8))));
      if (format == kKvInt4) {
        const int zero = f.zero[kv][i];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          dst[e] = static_cast<float>(static_cast<int>((q >> (4 * e)) & 0xf) - zero) * scale;
        }
      } else if (format == kKvFp8E4M3) {
#pragma unroll
        for (int e = 0; e < 4; ++e) dst[e] = fp8_e4m3_to_f32((q >> (8 * e)) & 0xff) * scale;
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          dst[e] =
              static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(q >> (8 * e)))) * scale;
        }
      }
    }
  }
}

// The tensor-core kernel's quantized tiles: K and V at iteration indices [tile_start, tile_start +
// kSlots) dequantized and rounded to bf16 rows (padded_row<bf16>), zeros past `kv_end`, with
// plain loads the block waits for (the mma.sync operands are bf16: the rounding costs the scores
// what bf16 K/V already cost them).
template <int kSlots>
__device__ __forceinline__ void load_quant_tile_bf16(const Launch& p, const WorkItem<false>& w,
                                                     int kv_head, int head_dim, int tile_start,
                                                     int kv_end, bf16* k_stage, bf16* v_stage) {
  constexpr int kItems = 1;  // one (slot, word) item a pass
  const int format = p.format;
  const int words = kv_data_bytes(format, head_dim) / 4;
  const int per_word = format == kKvInt4 ? 8 : 4;
  const int row = padded_row<bf16>(head_dim);
  for (int base = 0; base < kSlots * words; base += kThreads) {
    QuantWords<kItems> f;
    const int c = base + threadIdx.x;
    if (c >= kSlots * words) break;
    const int slot_local = c / words, word = c % words;
#pragma unroll
    for (int kv = 0; kv < 2; ++kv) {
      f.word[kv][0] = 0;
      f.scale_lo[kv][0] = f.scale_hi[kv][0] = f.zero[kv][0] = 0;
    }
    const int index = tile_start + slot_local;
    if (index < kv_end) {
      const int meta_bytes = kv_meta_bytes(format, head_dim);
      const int data_bytes = kv_data_bytes(format, head_dim);
      const int groups = (head_dim + 31) / 32;
      const uint8_t* arena = static_cast<const uint8_t*>(p.arena);
      const int virtual_slot = w.virtual_slot(index);
      const int slot = virtual_slot < w.prefix ? virtual_slot : w.gap + (virtual_slot - w.prefix);
      const int64_t page_base =
          (static_cast<int64_t>(p.layer) * p.num_pages + w.pages[slot / p.tokens_per_page]) *
          p.layer_page_elems;
      const int64_t k_row =
          static_cast<int64_t>(kv_head) * p.tokens_per_page + slot % p.tokens_per_page;
      const int g = format == kKvInt4 ? word / 4 : 0;
#pragma unroll
      for (int kv = 0; kv < 2; ++kv) {
        const int64_t r = k_row + kv * static_cast<int64_t>(p.num_kv_heads) * p.tokens_per_page;
        f.word[kv][0] =
            *reinterpret_cast<const uint32_t*>(arena + page_base + r * data_bytes + 4 * word);
        const uint8_t* meta = arena + page_base + p.meta_plane + r * meta_bytes;
        f.scale_lo[kv][0] = meta[2 * g];
        f.scale_hi[kv][0] = meta[2 * g + 1];
        if (format == kKvInt4) f.zero[kv][0] = meta[2 * groups + g];
      }
    }
#pragma unroll
    for (int kv = 0; kv < 2; ++kv) {
      const uint32_t q = f.word[kv][0];
      const float scale = __half2float(__ushort_as_half(static_cast<unsigned short>(
          f.scale_lo[kv][0] | (static_cast<unsigned>(f.scale_hi[kv][0]) << 8))));
      bf16* dst = (kv == 0 ? k_stage : v_stage) + slot_local * row + word * per_word;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        float x;
        if (format == kKvInt4) {
          x = static_cast<float>(static_cast<int>((q >> (4 * e)) & 0xf) - f.zero[kv][0]) * scale;
        } else if (e < 4 && format == kKvFp8E4M3) {
          x = fp8_e4m3_to_f32((q >> (8 * e)) & 0xff) * scale;
        } else if (e < 4) {
          x = static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(q >> (8 * e)))) * scale;
        } else {
          break;  // per-vector formats: 4 elements a word
        }
        dst[e] = __float2bfloat16_rn(x);
      }
    }
  }
}

template <typename KvT, int kHeadDim, int kRowsPerWarp, bool kHooks>
__global__ void __launch_bounds__(kThreads) attention_kernel(Launch p) {
  constexpr int kRows = kWarps * kRowsPerWarp;
  // Dimensions one lane accumulates: contiguous for the tuned head dims, strided (lane + 32 i)
  // for the generic instance.
  constexpr bool kGeneric = kHeadDim == 0;
  constexpr int kDPerLane = kGeneric ? kMaxHeadDim / 32 : (kHeadDim + 31) / 32;
  // The shared-memory tiles' element type: KvT itself, f32 for the quantized formats.
  using T = Tile<KvT>;
  constexpr bool kQuant = !std::is_same_v<T, KvT>;
  constexpr int kVec = kVec16<T>;
  const int head_dim = kGeneric ? p.head_dim : kHeadDim;
  const int row_elems = padded_row<T>(head_dim);

  wait_for_prior_kernels();
  allow_next_kernel();
  const Plan plan = *p.plan;
  const int item = blockIdx.x;
  if (item >= plan.num_items) return;
  const int kv_head = blockIdx.y;
  const WorkItem<kHooks> w = work_item<kHooks>(p, plan, item, kv_head, kRows);
  // A batch mixing formats runs an instance per format: a block of another format's sequence
  // exits here, uniformly (the kernel param is null for a batch of one format).
  if (p.kv_formats && p.kv_formats[w.seq] != p.format) return;
  const int q_begin = w.q_begin, packed_rows = w.packed_rows, first_row = w.first_row;
  const int kv_start = w.kv_start, kv_end = w.kv_end;

  extern __shared__ __align__(16) unsigned char smem[];
  float* q_s = reinterpret_cast<float*>(smem);
  T* kv_s = reinterpret_cast<T*>(q_s + kRows * head_dim);
  const int stage_elems = kTile * row_elems;                         // one K or V stage
  float* bias_s = reinterpret_cast<float*>(kv_s + 4 * stage_elems);  // kHooks: 2 stages

  for (int e = threadIdx.x; e < kRows * head_dim; e += kThreads) {
    const int r = e / head_dim, d = e % head_dim;
    const int packed = first_row + r;
    float value = 0.0f;
    if (packed < packed_rows) {
      const int token = q_begin + packed / p.group;
      const int head = kv_head * p.group + packed % p.group;
      value = to_float(p.q[token * p.q_stride_token + head * p.q_stride_head + d]) * p.scale_log2;
    }
    q_s[e] = value;
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float m[kRowsPerWarp], l[kRowsPerWarp], o[kRowsPerWarp][kDPerLane];
  int limit[kRowsPerWarp];  // exclusive causal limit of each row
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int packed = first_row + warp * kRowsPerWarp + r;
    limit[r] = packed < packed_rows ? min(w.row_limit(p, packed), kv_end) : 0;
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) o[r][i] = 0.0f;
  }

  const int num_tiles = (kv_end - kv_start + kTile - 1) / kTile;
  // Quantized: the (slot, word) items a thread moves per tile, for the largest format (int8's
  // head_dim / 4 words a row).
  constexpr int kQuantItems =
      kQuant ? (kTile * (kGeneric ? kMaxHeadDim : kHeadDim) / 4 + kThreads - 1) / kThreads : 1;
  [[maybe_unused]] QuantWords<kQuantItems> fetched;
  if (num_tiles > 0) {
    if constexpr (kQuant) {
      fetch_quant_tile<kTile>(p, w, kv_head, head_dim, kv_start, kv_end, fetched);
      store_quant_tile<kTile>(p, head_dim, fetched, kv_s, kv_s + stage_elems);
    } else {
      load_tile<KvT, kTile>(p, w, kv_head, head_dim, kv_start, kv_end, kv_s, kv_s + stage_elems,
                            bias_s);
    }
  }
  cp_async_commit();
  for (int tile = 0; tile < num_tiles; ++tile) {
    const int tile_start = kv_start + tile * kTile;
    if (tile + 1 < num_tiles) {
      if constexpr (kQuant) {  // loads in flight; stored into the next stage after the scores
        fetch_quant_tile<kTile>(p, w, kv_head, head_dim, tile_start + kTile, kv_end, fetched);
      } else {
        T* next = kv_s + ((tile + 1) % 2) * 2 * stage_elems;
        load_tile<KvT, kTile>(p, w, kv_head, head_dim, tile_start + kTile, kv_end, next,
                              next + stage_elems, bias_s + ((tile + 1) % 2) * kTile);
        cp_async_commit();
        cp_async_wait<1>();
      }
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* k_tile = kv_s + (tile % 2) * 2 * stage_elems;
    const T* v_tile = k_tile + stage_elems;

    // Scores of slot tile_start + lane for each of this warp's rows.
    float score[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) score[r] = 0.0f;
    const T* k_row = k_tile + lane * row_elems;
    const int vecs = head_dim / kVec;
#pragma unroll 4
    for (int v = 0; v < vecs; ++v) {
      float kf[kVec];
      load16(k_row + v * kVec, kf);
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float4* qv =
            reinterpret_cast<const float4*>(q_s + (warp * kRowsPerWarp + r) * head_dim + v * kVec);
#pragma unroll
        for (int j = 0; j < kVec / 4; ++j) {
          const float4 q4 = qv[j];
          score[r] +=
              q4.x * kf[4 * j] + q4.y * kf[4 * j + 1] + q4.z * kf[4 * j + 2] + q4.w * kf[4 * j + 3];
        }
      }
    }
    if constexpr (kHooks) {  // the slot's bias, in base 2 like the scores
      const float bias = bias_s[(tile % 2) * kTile + lane] * kLog2e;
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) score[r] += bias;
    }
    float prob[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float x = tile_start + lane < limit[r] ? score[r] : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(x));
      if (m_new == -INFINITY) {  // nothing visible yet: keep the empty state
        prob[r] = 0.0f;
        continue;
      }
      prob[r] = exp2f(x - m_new);
      const float alpha = exp2f(m[r] - m_new);
      l[r] = l[r] * alpha + warp_sum(prob[r]);
      m[r] = m_new;
#pragma unroll
      for (int i = 0; i < kDPerLane; ++i) o[r][i] *= alpha;
    }
    // o += P·V: slot j's probability comes from lane j.
    const int valid_slots = min(kTile, kv_end - tile_start);
    for (int j = 0; j < valid_slots; ++j) {
      const T* v_row = v_tile + j * row_elems;
      float vf[kDPerLane];
#pragma unroll
      for (int i = 0; i < kDPerLane; ++i) {
        const int d = kGeneric ? lane + 32 * i : lane * kDPerLane + i;
        vf[i] = (kGeneric && d >= head_dim) ? 0.0f : to_float(v_row[d]);
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float pj = __shfl_sync(0xffffffffu, prob[r], j);
#pragma unroll
        for (int i = 0; i < kDPerLane; ++i) o[r][i] += pj * vf[i];
      }
    }
    if constexpr (kQuant) {
      // The other stage was last read in the previous iteration, before its closing barrier.
      if (tile + 1 < num_tiles) {
        T* next = kv_s + ((tile + 1) % 2) * 2 * stage_elems;
        store_quant_tile<kTile>(p, head_dim, fetched, next, next + stage_elems);
      }
    }
    __syncthreads();  // the next iteration's copies overwrite this stage
  }

  // Results: the normalized rows, or the partial (o, m, l) of this split.
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = warp * kRowsPerWarp + r;
    const int packed = first_row + row;
    if (packed >= packed_rows) continue;
    if (plan.split_mode) {
      const int64_t partial = (static_cast<int64_t>(item) * p.num_kv_heads + kv_head) * kRows + row;
      float* dst = p.partial_o + partial * head_dim;
#pragma unroll
      for (int i = 0; i < kDPerLane; ++i) {
        const int d = kGeneric ? lane + 32 * i : lane * kDPerLane + i;
        if (d < head_dim) dst[d] = o[r][i];
      }
      if (lane == 0) p.partial_ml[partial] = make_float2(m[r], l[r]);
    } else {
      const int token = q_begin + packed / p.group;
      const int head = kv_head * p.group + packed % p.group;
      bf16* dst = p.out + token * p.out_stride_token + head * p.out_stride_head;
      const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
      for (int i = 0; i < kDPerLane; ++i) {
        const int d = kGeneric ? lane + 32 * i : lane * kDPerLane + i;
        if (d < head_dim) dst[d] = from_float<bf16>(o[r][i] * inv);
      }
    }
  }
}

template <typename KvT, int kHeadDim, int kRowsPerWarp, bool kHooks>
void run_attention_kernel(const Launch& launch, int grid_items, cudaStream_t stream) {
  constexpr int kRows = kWarps * kRowsPerWarp;
  auto* kernel = attention_kernel<KvT, kHeadDim, kRowsPerWarp, kHooks>;
  static const bool configured = [&] {
    const int max_dim = kHeadDim == 0 ? kMaxHeadDim : kHeadDim;
    SIEVE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem_bytes<KvT>(kRows, max_dim, kHooks))));
    return true;
  }();
  (void)configured;
  const dim3 grid(static_cast<unsigned>(grid_items), static_cast<unsigned>(launch.num_kv_heads));
  kernel<<<grid, kThreads, smem_bytes<KvT>(kRows, launch.head_dim, kHooks), stream>>>(launch);
  SIEVE_CUDA_CHECK_LAUNCH();
}

}  // namespace sieve::kernels::cuda::attention_impl

// One explicit instance, for the files under kernels/cuda/instances/.
#define SIEVE_ATTENTION_INSTANCE(KvT, kHeadDim, kRowsPerWarp, kHooks)                             \
  template void ::sieve::kernels::cuda::attention_impl::run_attention_kernel<                     \
      KvT, kHeadDim, kRowsPerWarp, kHooks>(const ::sieve::kernels::cuda::attention_impl::Launch&, \
                                           int, cudaStream_t)
