#pragma once
// KV storage formats (docs/design.md, "Paged KV cache"): a format is one row of kKvFormats. Pages
// have a fixed number of bytes, so a sequence's format decides how many of its tokens fit in a
// page; sequences of different formats share one pool and one accounting. The byte layout of a
// page in each format is in kvcache/README.md ("Formats").

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "core/dtype.h"
#include "core/status.h"

namespace sieve::kvcache {

// Identifies a row of kKvFormats; a switch over it has no default.
enum class KvFormatId : uint8_t { kF32, kBF16, kFp8E4M3, kInt8, kInt4 };

// How a format's elements share scales.
enum class KvScaling : uint8_t {
  kNone,          // elements stored as they are (f32, bf16)
  kPerTokenHead,  // one scale per (token, KV head) vector (fp8, int8)
  kPerGroup,      // a scale and a zero point per group of `group_size` channels (int4)
};

// The model dimensions that size a token's KV (keys and values of every layer and KV head).
struct KvGeometry {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

// One KV storage format.
struct KvFormat {
  KvFormatId id;
  std::string_view name;  // as requests spell it (`kv_format`)
  int bits;               // bits per stored element
  KvScaling scaling;
  int group_size;         // channels per group (kPerGroup only)
  int scale_bytes;        // bytes of one scale (with its zero point) of a vector or group
  DType dtype;            // element type the backend stores (u8 for quantized formats)

  bool quantized() const { return scaling != KvScaling::kNone; }
  // Scale records of one token's key (or value) vector of one KV head.
  int num_scales(int head_dim) const;
  // Bytes of one token's key (or value) elements for one KV head, then of its scales.
  size_t data_bytes(int head_dim) const;
  size_t meta_bytes(int head_dim) const { return static_cast<size_t>(num_scales(head_dim)) * scale_bytes; }
  // Bytes of one token's key (or value) vector for one KV head, scales included.
  size_t bytes_per_token_head(int head_dim) const { return data_bytes(head_dim) + meta_bytes(head_dim); }
  // Bytes of one token's keys and values across all layers and KV heads.
  size_t bytes_per_token(int num_layers, int num_kv_heads, int head_dim) const;
  size_t bytes_per_token(const KvGeometry& geometry) const {
    return bytes_per_token(geometry.num_layers, geometry.num_kv_heads, geometry.head_dim);
  }
};

// The channels of one int4 group.
inline constexpr int kInt4GroupSize = 32;
// The largest value fp8 e4m3 (the "fn" variant: no infinities) represents.
inline constexpr float kFp8E4M3Max = 448.0f;

// Every format the engine can store, one row each, indexed by KvFormatId. Scales are IEEE half;
// an int4 group's record is its half scale and its u8 zero point (kvcache/README.md, "Formats").
inline constexpr KvFormat kKvFormats[] = {
    {KvFormatId::kF32, "f32", 32, KvScaling::kNone, 0, 0, DType::kF32},
    {KvFormatId::kBF16, "bf16", 16, KvScaling::kNone, 0, 0, DType::kBF16},
    {KvFormatId::kFp8E4M3, "fp8_e4m3", 8, KvScaling::kPerTokenHead, 0, 2, DType::kU8},
    {KvFormatId::kInt8, "int8", 8, KvScaling::kPerTokenHead, 0, 2, DType::kU8},
    {KvFormatId::kInt4, "int4", 4, KvScaling::kPerGroup, kInt4GroupSize, 3, DType::kU8},
};

// The row of `id`.
const KvFormat& kv_format(KvFormatId id);
// The format a request names; the error lists the known names.
StatusOr<KvFormatId> parse_kv_format(std::string_view name);
// Tokens of `format` that fit in one page of `page_bytes` (0 when not even one fits).
int tokens_per_page(size_t page_bytes, KvFormatId format, const KvGeometry& geometry);

}  // namespace sieve::kvcache
