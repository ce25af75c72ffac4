#pragma once
// KV storage formats (docs/design.md, "Paged KV cache"): a format is one row of kKvFormats. Pages
// have a fixed number of bytes, so a sequence's format decides how many of its tokens fit in a
// page; sequences of different formats share one pool and one accounting.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "core/dtype.h"
#include "core/status.h"

namespace sieve::kvcache {

// Identifies a row of kKvFormats; a switch over it has no default.
enum class KvFormatId : uint8_t { kF32, kBF16 };

// The model dimensions that size a token's KV (keys and values of every layer and KV head).
struct KvGeometry {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

// One KV storage format. Quantized formats later add groups with their own scales.
struct KvFormat {
  KvFormatId id;
  std::string_view name;  // as requests spell it (`kv_format`)
  int bits;               // bits per stored element
  int group_size;         // elements sharing one scale; 0 = no scales
  int scale_bytes;        // bytes of one group's scale (and zero point)
  DType dtype;            // element type the backend stores (u8 for packed formats)

  // Bytes of one token's key (or value) vector for one KV head, scales included.
  size_t bytes_per_token_head(int head_dim) const;
  // Bytes of one token's keys and values across all layers and KV heads.
  size_t bytes_per_token(int num_layers, int num_kv_heads, int head_dim) const;
  size_t bytes_per_token(const KvGeometry& geometry) const {
    return bytes_per_token(geometry.num_layers, geometry.num_kv_heads, geometry.head_dim);
  }
};

// Every format the engine can store, one row each, indexed by KvFormatId.
inline constexpr KvFormat kKvFormats[] = {
    {KvFormatId::kF32, "f32", 32, 0, 0, DType::kF32},
    {KvFormatId::kBF16, "bf16", 16, 0, 0, DType::kBF16},
};

// The row of `id`.
const KvFormat& kv_format(KvFormatId id);
// The format a request names; the error lists the known names.
StatusOr<KvFormatId> parse_kv_format(std::string_view name);
// Tokens of `format` that fit in one page of `page_bytes` (0 when not even one fits).
int tokens_per_page(size_t page_bytes, KvFormatId format, const KvGeometry& geometry);

}  // namespace sieve::kvcache
