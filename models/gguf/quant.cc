#include "models/gguf/quant.h"

#include <array>
#include <cstring>
#include <string>

#include "core/dtype.h"

// The float math below is written to match ggml's reference dequantization (and the `gguf` Python
// package) bit for bit: products and sums are separate float operations, and this target is
// compiled with -ffp-contract=off so that no compiler fuses them into an FMA.

namespace sieve::models::gguf {
namespace {

float half(uint16_t bits) { return f16_to_f32(bits); }

uint32_t load_u32_le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

// The 4-bit element i of a 32-element block: low nibbles first, then high nibbles.
int nibble(const uint8_t* qs, int i) {
  return i < kQK / 2 ? (qs[i] & 0x0F) : (qs[i - kQK / 2] >> 4);
}

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block.
void scale_min_k4(const uint8_t* scales, int j, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// Copies each block out of the (possibly unaligned) source before decoding it.
template <typename Block, int kElements>
void dequantize_blocks(const std::byte* src, int64_t num_blocks, float* out) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    Block block;
    std::memcpy(&block, src + b * static_cast<int64_t>(sizeof(Block)), sizeof(Block));
    dequantize_block(block, out + b * kElements);
  }
}

void dequantize_f32(const std::byte* src, int64_t n, float* out) {
  std::memcpy(out, src, static_cast<size_t>(n) * sizeof(float));
}

void dequantize_f16(const std::byte* src, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, src + 2 * i, 2);
    out[i] = f16_to_f32(bits);
  }
}

void dequantize_bf16(const std::byte* src, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, src + 2 * i, 2);
    out[i] = bf16_to_f32(bits);
  }
}

constexpr int kNumTypeIds = 42;

constexpr std::array<TypeTraits, kNumTypeIds> make_table() {
  std::array<TypeTraits, kNumTypeIds> t{};
  auto set = [&t](uint32_t id, std::string_view name, int64_t block_size, int64_t block_bytes,
                  DequantizeFn fn) {
    t[id] = TypeTraits{static_cast<GgmlType>(id), name, block_size, block_bytes, fn};
  };
  set(0, "F32", 1, 4, dequantize_f32);
  set(1, "F16", 1, 2, dequantize_f16);
  set(2, "Q4_0", kQK, sizeof(BlockQ4_0), dequantize_blocks<BlockQ4_0, kQK>);
  set(3, "Q4_1", kQK, sizeof(BlockQ4_1), dequantize_blocks<BlockQ4_1, kQK>);
  set(6, "Q5_0", kQK, sizeof(BlockQ5_0), dequantize_blocks<BlockQ5_0, kQK>);
  set(7, "Q5_1", kQK, sizeof(BlockQ5_1), dequantize_blocks<BlockQ5_1, kQK>);
  set(8, "Q8_0", kQK, sizeof(BlockQ8_0), dequantize_blocks<BlockQ8_0, kQK>);
  set(9, "Q8_1", kQK, 4 + 4 + 32, nullptr);
  set(10, "Q2_K", kQK_K, 2 + 2 + 16 + 64, nullptr);
  set(11, "Q3_K", kQK_K, 2 + 64 + 32 + 12, nullptr);
  set(12, "Q4_K", kQK_K, sizeof(BlockQ4_K), dequantize_blocks<BlockQ4_K, kQK_K>);
  set(13, "Q5_K", kQK_K, sizeof(BlockQ5_K), dequantize_blocks<BlockQ5_K, kQK_K>);
  set(14, "Q6_K", kQK_K, sizeof(BlockQ6_K), dequantize_blocks<BlockQ6_K, kQK_K>);
  set(15, "Q8_K", kQK_K, 4 + 256 + 32, nullptr);
  set(16, "IQ2_XXS", kQK_K, 2 + 64, nullptr);
  set(17, "IQ2_XS", kQK_K, 2 + 64 + 8, nullptr);
  set(18, "IQ3_XXS", kQK_K, 2 + 64 + 32, nullptr);
  set(19, "IQ1_S", kQK_K, 2 + 32 + 16, nullptr);
  set(20, "IQ4_NL", kQK, 2 + 16, nullptr);
  set(21, "IQ3_S", kQK_K, 2 + 64 + 32 + 8 + 4, nullptr);
  set(22, "IQ2_S", kQK_K, 2 + 64 + 16, nullptr);
  set(23, "IQ4_XS", kQK_K, 2 + 2 + 128 + 4, nullptr);
  set(24, "I8", 1, 1, nullptr);
  set(25, "I16", 1, 2, nullptr);
  set(26, "I32", 1, 4, nullptr);
  set(27, "I64", 1, 8, nullptr);
  set(28, "F64", 1, 8, nullptr);
  set(29, "IQ1_M", kQK_K, 32 + 16 + 8, nullptr);
  set(30, "BF16", 1, 2, dequantize_bf16);
  set(34, "TQ1_0", kQK_K, 2 + 4 * 13, nullptr);
  set(35, "TQ2_0", kQK_K, 2 + 64, nullptr);
  set(39, "MXFP4", kQK, 1 + 16, nullptr);
  set(40, "NVFP4", 64, 4 + 32, nullptr);
  set(41, "Q1_0", 128, 2 + 16, nullptr);
  return t;
}

constexpr std::array<TypeTraits, kNumTypeIds> kTypeTable = make_table();

}  // namespace

void dequantize_block(const BlockQ4_0& block, float* out) {
  const float d = half(block.d);
  for (int i = 0; i < kQK; ++i) out[i] = d * static_cast<float>(nibble(block.qs, i) - 8);
}

void dequantize_block(const BlockQ4_1& block, float* out) {
  const float d = half(block.d);
  const float m = half(block.m);
  for (int i = 0; i < kQK; ++i) out[i] = d * static_cast<float>(nibble(block.qs, i)) + m;
}

void dequantize_block(const BlockQ5_0& block, float* out) {
  const float d = half(block.d);
  const uint32_t qh = load_u32_le(block.qh);
  for (int i = 0; i < kQK; ++i) {
    const int q = nibble(block.qs, i) | static_cast<int>(((qh >> i) & 1u) << 4);
    out[i] = d * static_cast<float>(q - 16);
  }
}

void dequantize_block(const BlockQ5_1& block, float* out) {
  const float d = half(block.d);
  const float m = half(block.m);
  const uint32_t qh = load_u32_le(block.qh);
  for (int i = 0; i < kQK; ++i) {
    const int q = nibble(block.qs, i) | static_cast<int>(((qh >> i) & 1u) << 4);
    out[i] = d * static_cast<float>(q) + m;
  }
}

void dequantize_block(const BlockQ8_0& block, float* out) {
  const float d = half(block.d);
  for (int i = 0; i < kQK; ++i) out[i] = static_cast<float>(block.qs[i]) * d;
}

void dequantize_block(const BlockQ4_K& block, float* out) {
  const float d = half(block.d);
  const float dmin = half(block.dmin);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    scale_min_k4(block.scales, j, &sc, &m);
    const float scale = d * static_cast<float>(sc);
    const float min = dmin * static_cast<float>(m);
    const uint8_t* qs = block.qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    for (int l = 0; l < 32; ++l) {
      out[32 * j + l] = scale * static_cast<float>((qs[l] >> shift) & 0x0F) - min;
    }
  }
}

void dequantize_block(const BlockQ5_K& block, float* out) {
  const float d = half(block.d);
  const float dmin = half(block.dmin);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    scale_min_k4(block.scales, j, &sc, &m);
    const float scale = d * static_cast<float>(sc);
    const float min = dmin * static_cast<float>(m);
    const uint8_t* qs = block.qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    for (int l = 0; l < 32; ++l) {
      const int q = ((qs[l] >> shift) & 0x0F) | (((block.qh[l] >> j) & 1) << 4);
      out[32 * j + l] = scale * static_cast<float>(q) - min;
    }
  }
}

void dequantize_block(const BlockQ6_K& block, float* out) {
  const float d = half(block.d);
  // Two halves of 128 elements; in each, element r takes its low 4 bits from ql (r < 64: low
  // nibble of ql[r], else high nibble of ql[r - 64]) and its high 2 bits from bits 2*(r / 32)
  // of qh[r % 32].
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = block.ql + 64 * h;
    const uint8_t* qh = block.qh + 32 * h;
    for (int r = 0; r < 128; ++r) {
      const int low = (ql[r % 64] >> (4 * (r / 64))) & 0x0F;
      const int high = (qh[r % 32] >> (2 * (r / 32))) & 0x03;
      const int e = 128 * h + r;
      const float scale = d * static_cast<float>(block.scales[e / 16]);
      out[e] = scale * static_cast<float>((low | (high << 4)) - 32);
    }
  }
}

const TypeTraits* find_type_traits(uint32_t type_id) {
  if (type_id >= kTypeTable.size() || kTypeTable[type_id].name.empty()) return nullptr;
  return &kTypeTable[type_id];
}

Status dequantize(GgmlType type, const std::byte* src, int64_t numel, float* out) {
  const TypeTraits* traits = find_type_traits(static_cast<uint32_t>(type));
  if (traits == nullptr) {
    return InvalidArgumentError("unknown ggml type " + std::to_string(static_cast<uint32_t>(type)));
  }
  if (traits->dequantize == nullptr) {
    return UnimplementedError("cannot dequantize ggml type " + std::string(traits->name));
  }
  if (numel < 0 || numel % traits->block_size != 0) {
    return InvalidArgumentError(std::to_string(numel) + " elements is not a whole number of " +
                                std::string(traits->name) + " blocks");
  }
  if (numel == 0) return OkStatus();  // `out` may be null then, and memcpy must not see it
  traits->dequantize(src, numel / traits->block_size, out);
  return OkStatus();
}

}  // namespace sieve::models::gguf
