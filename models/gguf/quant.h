#pragma once
// ggml's block formats as data: one struct and one dequantize function per format, and a table
// indexed by ggml type id that says each type's name, block size, bytes per block and how to
// dequantize it. Layouts follow ggml's definitions (ggml-common.h); every multi-byte field is
// little-endian, scales are IEEE half (`uint16_t` bits).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/status.h"

namespace sieve::models::gguf {

// ggml tensor type ids as GGUF stores them (ids 4 and 5 were removed from ggml).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

inline constexpr int kQK = 32;     // elements per block of the legacy formats
inline constexpr int kQK_K = 256;  // elements per super-block of the k-quants

// x = d * (q - 8), q 4-bit; element i < 16 in the low nibble of qs[i], i >= 16 in the high one.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
// x = d * q + m, q 4-bit, nibbles as in Q4_0.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
// x = d * (q - 16), q 5-bit: low 4 bits as in Q4_0, bit 4 of element i is bit i of qh (LE u32).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// x = d * q + m, q 5-bit as in Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// x = d * q, q int8.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
// 8 sub-blocks of 32: x = (d * sc_j) * q - dmin * m_j, q 4-bit, 6-bit sc_j and m_j packed in
// `scales`; sub-blocks 2k and 2k+1 are the low and high nibbles of qs[32k .. 32k+31].
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
// As Q4_K with a fifth bit: bit j of qh[l] is bit 4 of element l of sub-block j.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
// 16 sub-blocks of 16: x = (d * scales_j) * (q - 32), q 6-bit from ql (low 4) and qh (high 2).
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// Each writes the block's elements (kQK or kQK_K floats) to `out`.
void dequantize_block(const BlockQ4_0& block, float* out);
void dequantize_block(const BlockQ4_1& block, float* out);
void dequantize_block(const BlockQ5_0& block, float* out);
void dequantize_block(const BlockQ5_1& block, float* out);
void dequantize_block(const BlockQ8_0& block, float* out);
void dequantize_block(const BlockQ4_K& block, float* out);
void dequantize_block(const BlockQ5_K& block, float* out);
void dequantize_block(const BlockQ6_K& block, float* out);

// Dequantizes `num_blocks` consecutive blocks at `src` (any alignment) into `out`.
using DequantizeFn = void (*)(const std::byte* src, int64_t num_blocks, float* out);

// What Sieve knows of one ggml type.
struct TypeTraits {
  GgmlType type;
  std::string_view name;
  int64_t block_size;       // elements per block
  int64_t block_bytes;      // bytes per block
  DequantizeFn dequantize;  // nullptr where Sieve cannot dequantize the type (yet)
};

// The traits of ggml type id `type_id`, or nullptr when no ggml type has that id. Every ggml type
// is listed (so a file with, say, IQ2_XS tensors still parses); those Sieve cannot dequantize have
// `dequantize == nullptr`.
const TypeTraits* find_type_traits(uint32_t type_id);

// Dequantizes `numel` elements of `type` from `src` into `out`. Errors when the type cannot be
// dequantized or `numel` is not a multiple of its block size.
Status dequantize(GgmlType type, const std::byte* src, int64_t numel, float* out);

}  // namespace sieve::models::gguf
