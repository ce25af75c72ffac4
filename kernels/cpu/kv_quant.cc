#include "kernels/cpu/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "core/dtype.h"

namespace sieve::kernels::cpu {
namespace {

using kvcache::KvFormat;
using kvcache::KvFormatId;

// The half scale of a vector or group as stored, and back (unaligned: int4 records are 3 bytes).
float load_half(const std::byte* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return f16_to_f32(bits);
}
float store_half(std::byte* p, float x) {
  const uint16_t bits = f32_to_f16(std::min(x, 65504.0f));  // the largest finite half
  std::memcpy(p, &bits, sizeof bits);
  return f16_to_f32(bits);  // the scale the reader will see
}

float abs_max(const float* x, int n) {
  float m = 0;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// fp8 and int8: elements x / s with s = amax / qmax rounded to half, stored first.
void quantize_per_vector(const KvFormat& format, const float* x, int head_dim, std::byte* data,
                         std::byte* meta) {
  const bool fp8 = format.id == KvFormatId::kFp8E4M3;
  const float scale =
      store_half(meta, abs_max(x, head_dim) / (fp8 ? kvcache::kFp8E4M3Max : 127.0f));
  auto* q = reinterpret_cast<uint8_t*>(data);
  for (int d = 0; d < head_dim; ++d) {
    const float v = scale > 0 ? x[d] / scale : 0.0f;
    if (fp8) {
      q[d] = f32_to_fp8_e4m3(v);
    } else {
      const auto i = static_cast<int8_t>(std::clamp(std::nearbyint(v), -127.0f, 127.0f));
      std::memcpy(&q[d], &i, 1);
    }
  }
}

// int4: per group of 32 channels, the range [min(lo, 0), max(hi, 0)] over 15 steps with an
// integer zero point.
void quantize_int4(const KvFormat& format, const float* x, int head_dim, std::byte* data,
                   std::byte* meta) {
  const int groups = format.num_scales(head_dim);
  auto* q = reinterpret_cast<uint8_t*>(data);
  std::memset(q, 0, format.data_bytes(head_dim));
  for (int g = 0; g < groups; ++g) {
    const int begin = g * format.group_size, end = std::min(head_dim, begin + format.group_size);
    float lo = 0, hi = 0;
    for (int d = begin; d < end; ++d) lo = std::min(lo, x[d]), hi = std::max(hi, x[d]);
    const float scale = store_half(meta + 2 * g, (hi - lo) / 15.0f);
    const float zero = scale > 0 ? std::clamp(std::nearbyint(-lo / scale), 0.0f, 15.0f) : 0.0f;
    meta[2 * groups + g] = static_cast<std::byte>(zero);
    for (int d = begin; d < end; ++d) {
      const float v = scale > 0 ? std::clamp(std::nearbyint(x[d] / scale) + zero, 0.0f, 15.0f) : 0;
      q[d / 2] |= static_cast<uint8_t>(static_cast<uint8_t>(v) << (4 * (d % 2)));
    }
  }
}

}  // namespace

uint8_t f32_to_fp8_e4m3(float x) {
  if (std::isnan(x)) return 0x7f;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const float a = std::min(std::fabs(x), kvcache::kFp8E4M3Max);
  if (a < 0x1p-6f) {  // subnormal: steps of 2^-9 (a count of 8 is the smallest normal, 0x08)
    return sign | static_cast<uint8_t>(std::nearbyint(a * 0x1p9f));
  }
  int e;
  std::frexp(a, &e);  // a = m · 2^e with m in [0.5, 1): the exponent of a is e - 1
  const int exponent = e - 1;
  // The mantissa with its implicit bit, in [8, 16]: 16 carries into the next exponent.
  const int m = static_cast<int>(std::nearbyint(std::ldexp(a, 3 - exponent)));
  const int code = ((exponent + 7) << 3) + (m - 8);  // m == 16 carries into the exponent field
  return sign | static_cast<uint8_t>(code);
}

float fp8_e4m3_to_f32(uint8_t bits) {
  const int exponent = (bits >> 3) & 0xf, mantissa = bits & 7;
  if (exponent == 0xf && mantissa == 7) return NAN;
  const float a = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                : std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
  return bits & 0x80 ? -a : a;
}

void quantize_vector(const KvFormat& format, const float* x, int head_dim, std::byte* data,
                     std::byte* meta) {
  switch (format.id) {
    case KvFormatId::kF32:
      std::memcpy(data, x, head_dim * sizeof(float));
      return;
    case KvFormatId::kBF16:
      for (int d = 0; d < head_dim; ++d) {
        const uint16_t bits = f32_to_bf16(x[d]);
        std::memcpy(data + 2 * d, &bits, 2);
      }
      return;
    case KvFormatId::kFp8E4M3:
    case KvFormatId::kInt8:
      quantize_per_vector(format, x, head_dim, data, meta);
      return;
    case KvFormatId::kInt4:
      quantize_int4(format, x, head_dim, data, meta);
      return;
  }
  SIEVE_CHECK(false) << "unknown KV format";
}

void dequantize_vector(const KvFormat& format, const std::byte* data, const std::byte* meta,
                       int head_dim, float* out) {
  const auto* q = reinterpret_cast<const uint8_t*>(data);
  switch (format.id) {
    case KvFormatId::kF32:
      std::memcpy(out, data, head_dim * sizeof(float));
      return;
    case KvFormatId::kBF16:
      for (int d = 0; d < head_dim; ++d) {
        uint16_t bits;
        std::memcpy(&bits, data + 2 * d, 2);
        out[d] = bf16_to_f32(bits);
      }
      return;
    case KvFormatId::kFp8E4M3: {
      const float scale = load_half(meta);
      for (int d = 0; d < head_dim; ++d) out[d] = fp8_e4m3_to_f32(q[d]) * scale;
      return;
    }
    case KvFormatId::kInt8: {
      const float scale = load_half(meta);
      for (int d = 0; d < head_dim; ++d)
        out[d] = static_cast<float>(static_cast<int8_t>(q[d])) * scale;
      return;
    }
    case KvFormatId::kInt4: {
      const int groups = format.num_scales(head_dim);
      for (int g = 0; g < groups; ++g) {
        const float scale = load_half(meta + 2 * g);
        const int zero = static_cast<uint8_t>(meta[2 * groups + g]);
        const int begin = g * format.group_size;
        const int end = std::min(head_dim, begin + format.group_size);
        for (int d = begin; d < end; ++d) {
          out[d] = static_cast<float>(((q[d / 2] >> (4 * (d % 2))) & 0xf) - zero) * scale;
        }
      }
      return;
    }
  }
  SIEVE_CHECK(false) << "unknown KV format";
}

}  // namespace sieve::kernels::cpu
