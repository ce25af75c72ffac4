#pragma once
// Element types of tensors. Quantized storage types (GGUF blocks, KV formats) are added here as
// they arrive; a switch over DType has no default, so a new type fails to compile where it matters.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string_view>

namespace sieve {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kI32,
  kI64,
  kU8,
  // GGUF block formats (models/gguf/quant.h has their layouts), kept as they are in the file for
  // the CPU backend's quantized GEMM. A view of one counts elements; its rows are whole blocks.
  kQ8_0,
  kQ4_0,
  kQ4_1,
  kQ4_K,
  kQ5_K,
  kQ6_K,
};

// Bytes of one element; a block format has none (checked): use dtype_bytes.
size_t dtype_size(DType dtype);
// Elements per block (1 for a plain dtype) and bytes per block.
int64_t dtype_block_elems(DType dtype);
size_t dtype_block_bytes(DType dtype);
inline bool is_block_dtype(DType dtype) { return dtype_block_elems(dtype) > 1; }
// Bytes of `numel` elements, which must be whole blocks.
size_t dtype_bytes(DType dtype, int64_t numel);
std::string_view dtype_name(DType dtype);

// IEEE half and bfloat16 conversions (round to nearest even), exact for every finite value.
inline float bf16_to_f32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline std::ostream& operator<<(std::ostream& os, DType dtype) { return os << dtype_name(dtype); }

float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float f);

}  // namespace sieve
