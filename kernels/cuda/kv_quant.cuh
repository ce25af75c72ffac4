#pragma once
// KV formats on the device (kvcache/README.md, "Formats"): where a format's elements and scales
// lie in a page, and its codecs. The CPU's kernels/cpu/kv_quant.cc is the reference: the encoders
// here do the same f32 operations in the same order (IEEE division, round to nearest even, the
// scale rounded to half before dividing by it), so a page written here has the CPU's bytes, which
// tests/cuda checks. Included only by .cu files.

#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv_cache.h"

namespace sieve::kernels::cuda {

SIEVE_HOST_DEVICE inline bool kv_quantized(int format) {
  return format == kKvFp8E4M3 || format == kKvInt8 || format == kKvInt4;
}

// Bytes of one (token, KV head) key or value vector's elements, then of its scale record
// (kvcache::KvFormat::data_bytes / meta_bytes).
SIEVE_HOST_DEVICE inline int kv_data_bytes(int format, int head_dim) {
  switch (format) {
    case kKvF32:
      return 4 * head_dim;
    case kKvBF16:
      return 2 * head_dim;
    case kKvInt4:
      return (head_dim + 1) / 2;
    default:
      return head_dim;
  }
}
SIEVE_HOST_DEVICE inline int kv_meta_bytes(int format, int head_dim) {
  switch (format) {
    case kKvFp8E4M3:
    case kKvInt8:
      return 2;
    case kKvInt4:
      return 3 * ((head_dim + 31) / 32);
    default:
      return 0;
  }
}

// Where a format's vectors lie in one layer's copy of a page of the arena.
struct KvPageGeometry {
  int tokens_per_page, data_bytes, meta_bytes;
  int64_t meta_plane;  // byte offset of the scale plane

  // Byte offsets inside the arena of (layer, page, K or V, kv_head, slot in page).
  SIEVE_HOST_DEVICE int64_t row(const KvArena& a, int kv, int kv_head, int offset) const {
    return (static_cast<int64_t>(kv) * a.num_kv_heads + kv_head) * tokens_per_page + offset;
  }
  SIEVE_HOST_DEVICE int64_t data(const KvArena& a, int layer, int64_t page, int kv, int kv_head,
                                 int offset) const {
    return (static_cast<int64_t>(layer) * a.num_pages + page) * a.page_bytes +
           row(a, kv, kv_head, offset) * data_bytes;
  }
  SIEVE_HOST_DEVICE int64_t meta(const KvArena& a, int layer, int64_t page, int kv, int kv_head,
                                 int offset) const {
    return (static_cast<int64_t>(layer) * a.num_pages + page) * a.page_bytes + meta_plane +
           row(a, kv, kv_head, offset) * meta_bytes;
  }
};

// KvCacheLayout::for_format's numbers, on the device: the page bytes are fixed, the format decides
// how many tokens fit.
SIEVE_HOST_DEVICE inline KvPageGeometry kv_geometry(const KvArena& a, int format) {
  KvPageGeometry g;
  g.data_bytes = kv_data_bytes(format, a.head_dim);
  g.meta_bytes = kv_meta_bytes(format, a.head_dim);
  g.tokens_per_page =
      static_cast<int>(a.page_bytes / (2ll * a.num_kv_heads * (g.data_bytes + g.meta_bytes)));
  g.meta_plane = 2ll * a.num_kv_heads * g.tokens_per_page * g.data_bytes;
  return g;
}

// The arena's own format's geometry (its tokens per page as the layout gives them).
SIEVE_HOST_DEVICE inline KvPageGeometry arena_geometry(const KvArena& a) {
  KvPageGeometry g = kv_geometry(a, a.format);
  g.tokens_per_page = a.tokens_per_page;
  g.meta_plane = 2ll * a.num_kv_heads * g.tokens_per_page * g.data_bytes;
  return g;
}

// fp8 e4m3 "fn", as kernels/cpu/kv_quant.cc: round to nearest even, saturating at ±448.
__device__ __forceinline__ uint8_t f32_to_fp8_e4m3(float x) {
  if (isnan(x)) return 0x7f;
  const uint8_t sign = signbit(x) ? 0x80 : 0;
  const float a = fminf(fabsf(x), 448.0f);
  if (a < 0x1p-6f) return sign | static_cast<uint8_t>(rintf(a * 0x1p9f));  // subnormal
  int e;
  frexpf(a, &e);
  const int exponent = e - 1;
  const int m = static_cast<int>(rintf(ldexpf(a, 3 - exponent)));  // in [8, 16]
  return sign | static_cast<uint8_t>(((exponent + 7) << 3) + (m - 8));
}

__device__ __forceinline__ float fp8_e4m3_to_f32(uint32_t bits) {
  const uint32_t exponent = (bits >> 3) & 0xf, mantissa = bits & 7;
  float a;
  if (exponent == 0xf && mantissa == 7) {
    a = __int_as_float(0x7fc00000);
  } else if (exponent == 0) {
    a = static_cast<float>(mantissa) * 0x1p-9f;
  } else {
    a = __int_as_float(static_cast<int>(((exponent + 120) << 23) | (mantissa << 20)));
  }
  return bits & 0x80 ? -a : a;
}

// A half scale as stored (unaligned: int4 records are 3 bytes a group), and its value.
__device__ __forceinline__ float load_half(const uint8_t* p) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(p[0] | (p[1] << 8))));
}
// Stores x rounded to half (the largest finite half at most) and returns the stored value.
__device__ __forceinline__ float store_half(uint8_t* p, float x, bool write) {
  const __half h = __float2half_rn(fminf(x, 65504.0f));
  if (write) {
    const unsigned short bits = __half_as_ushort(h);
    p[0] = static_cast<uint8_t>(bits & 0xff);
    p[1] = static_cast<uint8_t>(bits >> 8);
  }
  return __half2float(h);
}

__device__ __forceinline__ float warp_min(float x) { return -warp_max(-x); }

// One warp quantizes the vector src[0, head_dim) (bf16) into `data` and `meta` (kv_quant.cc's
// quantize_vector; every lane of the warp calls it).
__device__ __forceinline__ void quantize_vector_warp(int format, const bf16* src, int head_dim,
                                                     uint8_t* data, uint8_t* meta) {
  const int lane = threadIdx.x % 32;
  if (format == kKvInt4) {
    const int groups = (head_dim + 31) / 32;
    for (int g = 0; g < groups; ++g) {
      const int d = 32 * g + lane;
      const bool valid = d < head_dim;
      const float x = valid ? __bfloat162float(src[d]) : 0.0f;
      const float lo = warp_min(fminf(x, 0.0f)), hi = warp_max(fmaxf(x, 0.0f));
      const float scale = store_half(meta + 2 * g, __fdiv_rn(hi - lo, 15.0f), lane == 0);
      const float zero = scale > 0 ? fminf(fmaxf(rintf(__fdiv_rn(-lo, scale)), 0.0f), 15.0f) : 0.0f;
      if (lane == 0) meta[2 * groups + g] = static_cast<uint8_t>(zero);
      const float q =
          scale > 0 ? fminf(fmaxf(rintf(__fdiv_rn(x, scale)) + zero, 0.0f), 15.0f) : 0.0f;
      const uint32_t nibble = static_cast<uint32_t>(q);
      const uint32_t high = __shfl_down_sync(0xffffffffu, nibble, 1);
      if (valid && lane % 2 == 0) {
        data[d / 2] = static_cast<uint8_t>(nibble | (d + 1 < head_dim ? high << 4 : 0u));
      }
    }
    return;
  }
  const bool fp8 = format == kKvFp8E4M3;
  float amax = 0.0f;
  for (int d = lane; d < head_dim; d += 32) amax = fmaxf(amax, fabsf(__bfloat162float(src[d])));
  amax = warp_max(amax);
  const float scale = store_half(meta, __fdiv_rn(amax, fp8 ? 448.0f : 127.0f), lane == 0);
  for (int d = lane; d < head_dim; d += 32) {
    const float v = scale > 0 ? __fdiv_rn(__bfloat162float(src[d]), scale) : 0.0f;
    if (fp8) {
      data[d] = f32_to_fp8_e4m3(v);
    } else {
      data[d] = static_cast<uint8_t>(
          static_cast<int8_t>(static_cast<int>(fminf(fmaxf(rintf(v), -127.0f), 127.0f))));
    }
  }
}

// Element d of a stored vector in f32 (kv_quant.cc's dequantize_vector); exact: q · s has at
// most 16 significant bits.
__device__ __forceinline__ float dequantize_element(int format, const uint8_t* data,
                                                    const uint8_t* meta, int head_dim, int d) {
  switch (format) {
    case kKvFp8E4M3:
      return fp8_e4m3_to_f32(data[d]) * load_half(meta);
    case kKvInt8:
      return static_cast<float>(static_cast<int8_t>(data[d])) * load_half(meta);
    default: {  // int4
      const int groups = (head_dim + 31) / 32, g = d / 32;
      const int q = (data[d / 2] >> (4 * (d % 2))) & 0xf;
      return static_cast<float>(q - meta[2 * groups + g]) * load_half(meta + 2 * g);
    }
  }
}

// A stored vector read element by element as f32 (`row[d]`): the compression signals' reader of
// quantized keys and values.
struct QuantRow {
  const uint8_t* data;
  const uint8_t* meta;
  int format, head_dim;
  __device__ __forceinline__ float operator[](int d) const {
    return dequantize_element(format, data, meta, head_dim, d);
  }
};

// The vector (layer, page, K or V, kv_head, slot in page) of the arena's format, read as
// `row[d]`: a pointer to its elements (KvT bf16 or float), or a QuantRow.
template <typename KvT>
__device__ __forceinline__ auto arena_row(const KvArena& a, const KvPageGeometry& g, int layer,
                                          int64_t page, int kv, int kv_head, int offset) {
  if constexpr (std::is_same_v<KvT, QuantRow>) {
    const uint8_t* base = static_cast<const uint8_t*>(a.data);
    return QuantRow{base + g.data(a, layer, page, kv, kv_head, offset),
                    base + g.meta(a, layer, page, kv, kv_head, offset), a.format, a.head_dim};
  } else {
    return static_cast<const KvT*>(a.data) +
           g.data(a, layer, page, kv, kv_head, offset) / static_cast<int64_t>(sizeof(KvT));
  }
}

}  // namespace sieve::kernels::cuda
