#pragma once
// Writing one token's new K and V rows into its slot of the paged arena: shared by write_kv and
// the fused RoPE + write (rope.cu), which rotates K and stores it in the same kernel. Included
// only by .cu files.

#include <cstdint>
#include <cstdio>

#include "core/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_cache.h"
#include "kernels/cuda/kv_quant.cuh"
#include "kernels/cuda/rows.h"

namespace sieve::kernels::cuda {

// Element offset of (layer, page, K or V, kv_head, slot in page) in the arena.
__device__ __forceinline__ int64_t arena_offset(const KvArena& a, int layer, int64_t page, int kv,
                                                int kv_head, int offset) {
  return (static_cast<int64_t>(layer) * a.num_pages + page) * a.layer_page_elems() +
         ((static_cast<int64_t>(kv) * a.num_kv_heads + kv_head) * a.tokens_per_page + offset) *
             a.head_dim;
}

// The format of token t: its sequence's (the last s with qo_indptr[s] <= t), or the arena's.
__device__ __forceinline__ int token_format(const TokenFormats& f, const KvArena& a, int64_t t) {
  if (!f.formats) return a.format;
  int lo = 0, hi = f.num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (f.qo_indptr[mid] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return f.formats[lo];
}

// Quantized formats: one warp a vector (K or V of one KV head) finds its scales and stores it.
__device__ __forceinline__ void write_quantized_heads(const StridedRows& k, const StridedRows& v,
                                                      int64_t t, int first_head, int num_heads,
                                                      int32_t slot, const KvArena& a, int layer,
                                                      int format, const KvPageGeometry& g) {
  uint8_t* arena = static_cast<uint8_t*>(a.data);
  const int64_t page = slot / g.tokens_per_page;
  const int offset = slot % g.tokens_per_page;
  for (int w = threadIdx.x / 32; w < 2 * num_heads; w += blockDim.x / 32) {  // warp-uniform
    const int kv = w / num_heads, head = first_head + w % num_heads;
    const int64_t row = t * a.num_kv_heads + head;
    const bf16* src = kv == 0 ? static_cast<const bf16*>(k.data) + k.row_offset(row)
                              : static_cast<const bf16*>(v.data) + v.row_offset(row);
    quantize_vector_warp(format, src, a.head_dim, arena + g.data(a, layer, page, kv, head, offset),
                         arena + g.meta(a, layer, page, kv, head, offset));
  }
}

// The block's threads copy KV heads [first_head, first_head + num_heads) of token t, K and V,
// into `slot` of the token's format (nothing for a negative slot; a slot past the arena traps).
// kVec: 8 (16-byte vectors of the bf16 rows) or 1. Whole warps call it (quantized formats take a
// warp a vector).
template <typename KvT, int kVec>
__device__ __forceinline__ void write_kv_heads(const StridedRows& k, const StridedRows& v,
                                               int64_t t, int first_head, int num_heads,
                                               int32_t slot, const KvArena& arena_layout,
                                               const TokenFormats& formats, int layer) {
  if (slot < 0 || num_heads <= 0) return;
  // The layout's own format takes the path it always took; other formats recompute the page
  // geometry (a page of fixed bytes holds a format-dependent number of tokens).
  const int format = token_format(formats, arena_layout, t);
  KvArena a = arena_layout;
  if (format != a.format) {
    a.tokens_per_page = kv_geometry(a, format).tokens_per_page;
    a.format = format;
    a.dtype = format == kKvF32 ? DType::kF32 : format == kKvBF16 ? DType::kBF16 : DType::kU8;
  }
  const int64_t page = slot / a.tokens_per_page;
  if (page >= a.num_pages) {
    if (threadIdx.x == 0) printf("write_kv: slot %d is past page %d\n", slot, a.num_pages);
    __trap();
  }
  if (kv_quantized(format)) {
    write_quantized_heads(k, v, t, first_head, num_heads, slot, a, layer, format,
                          arena_geometry(a));
    return;
  }
  if (format != (sizeof(KvT) == 2 ? kKvBF16 : kKvF32)) {
    if (threadIdx.x == 0)
      printf("write_kv: format %d in an arena of %d-byte elements\n", format,
             static_cast<int>(sizeof(KvT)));
    __trap();
  }
  KvT* arena = static_cast<KvT*>(a.data);
  const int vecs = a.head_dim / kVec;
  for (int w = threadIdx.x; w < 2 * num_heads * vecs; w += blockDim.x) {
    const int kv = w / (num_heads * vecs);
    const int head = first_head + (w / vecs) % num_heads;
    const int vec = w % vecs;
    // Branches, not a reference to k or v: a dynamic pick of a parameter struct spills it.
    const int64_t row = t * a.num_kv_heads + head;
    const bf16* src = (kv == 0 ? static_cast<const bf16*>(k.data) + k.row_offset(row)
                               : static_cast<const bf16*>(v.data) + v.row_offset(row)) +
                      vec * kVec;
    KvT* dst =
        arena + arena_offset(a, layer, page, kv, head, slot % a.tokens_per_page) + vec * kVec;
    if constexpr (kVec == 8) {
      float x[8];
      load16(src, x);
      if constexpr (sizeof(KvT) == 2) {
        store16(dst, x);
      } else {
        store16(dst, x);
        store16(dst + 4, x + 4);
      }
    } else {
      *dst = from_float<KvT>(to_float(*src));
    }
  }
}

// A write instance: the arena's element type and the vector width (write_kv_heads's kVec).
template <typename T, int kV>
struct KvWriteInstance {
  using KvT = T;
  static constexpr int kVec = kV;
};

// Calls `launch(KvWriteInstance<KvT, kVec>{})` with the instance the rows and the arena allow:
// 16-byte vectors when every K and V row and the arena are 16-byte aligned, else scalars. A
// quantized layout's arena takes the bf16 instance (its unquantized tokens are bf16).
template <typename Launch>
void dispatch_kv_write(const StridedRows& k, const StridedRows& v, const KvArena& arena,
                       Launch&& launch) {
  const bool vec = k.vectorizable(2) && v.vectorizable(2) && arena.head_dim % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(arena.data) % 16 == 0 && arena.page_bytes % 16 == 0;
  if (arena.dtype == DType::kBF16 || arena.dtype == DType::kU8) {
    vec ? launch(KvWriteInstance<bf16, 8>{}) : launch(KvWriteInstance<bf16, 1>{});
  } else {
    SIEVE_CHECK(arena.dtype == DType::kF32) << "KV dtype " << arena.dtype;
    vec ? launch(KvWriteInstance<float, 8>{}) : launch(KvWriteInstance<float, 1>{});
  }
}

}  // namespace sieve::kernels::cuda
