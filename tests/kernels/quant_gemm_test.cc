// The quantized GEMM (kernels/cpu/quant_gemm.h) for every block format and every kernel level
// this CPU can run, against ref::gemm on the weights dequantized by models/gguf (the f32
// reference), within the error bound that rounding the activations to int8 allows.

#include "kernels/cpu/quant_gemm.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "models/gguf/quant.h"

namespace sieve::kernels::cpu {
namespace {

using models::gguf::GgmlType;

struct Format {
  DType dtype;
  GgmlType ggml;
};

const Format kFormats[] = {{DType::kQ8_0, GgmlType::kQ8_0}, {DType::kQ4_0, GgmlType::kQ4_0},
                           {DType::kQ4_1, GgmlType::kQ4_1}, {DType::kQ4_K, GgmlType::kQ4_K},
                           {DType::kQ5_K, GgmlType::kQ5_K}, {DType::kQ6_K, GgmlType::kQ6_K}};

std::vector<KernelLevel> runnable_levels() {
  std::vector<KernelLevel> levels;
  const KernelLevel best = best_kernel_level(cpu_features());
  for (int l = 0; l <= static_cast<int>(best); ++l) levels.push_back(static_cast<KernelLevel>(l));
  return levels;
}

void put_half(uint8_t* p, float v) {
  const uint16_t bits = f32_to_f16(v);
  std::memcpy(p, &bits, 2);
}

// Random blocks: random quants and scale bytes, and half scales of sane size at their offsets.
Tensor random_weights(DType dtype, int64_t n, int64_t k, std::mt19937& rng) {
  Tensor w = Tensor::empty(dtype, {n, k});
  auto* bytes = w.data<uint8_t>();
  for (size_t i = 0; i < w.nbytes(); ++i) bytes[i] = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  const size_t block = dtype_block_bytes(dtype);
  for (size_t b = 0; b < w.nbytes() / block; ++b) {
    uint8_t* p = bytes + b * block;
    switch (dtype) {
      case DType::kQ8_0:
      case DType::kQ4_0:
        put_half(p, scale(rng) * (rng() % 2 ? 1.0f : -1.0f));
        break;
      case DType::kQ4_1:
        put_half(p, scale(rng));
        put_half(p + 2, -8.0f * scale(rng));
        break;
      case DType::kQ4_K:
      case DType::kQ5_K:
        put_half(p, scale(rng) / 16);  // times 6-bit scales
        put_half(p + 2, scale(rng) / 16);
        break;
      case DType::kQ6_K:
        put_half(p + 208, scale(rng) / 64);  // times 8-bit scales
        break;
      default:
        ADD_FAILURE() << dtype_name(dtype);
    }
  }
  return w;
}

Tensor dequantized(const Tensor& w, GgmlType ggml) {
  Tensor out = Tensor::empty(DType::kF32, {w.size(0), w.size(1)});
  EXPECT_TRUE(models::gguf::dequantize(ggml, static_cast<const std::byte*>(w.view().raw()),
                                       w.numel(), out.data<float>())
                  .ok());
  return out;
}

// Mean 0.3: a zero-mean x would hide errors in the weights' offsets.
Tensor random_f32(std::initializer_list<int64_t> shape, std::mt19937& rng) {
  Tensor t = Tensor::empty(DType::kF32, shape);
  std::normal_distribution<float> normal(0.3f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

Tensor poisoned(int64_t m, int64_t n) {
  Tensor t = Tensor::empty(DType::kF32, {m, n});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = NAN;
  return t;
}

// Σ |x w| of output (i, j): the scale of its f32 rounding.
double magnitude(const Tensor& x, const Tensor& w_f32, int64_t i, int64_t j) {
  const int64_t k = x.size(1);
  double sum = 0;
  for (int64_t p = 0; p < k; ++p) {
    sum += std::abs(double(x.data<float>()[i * k + p]) * w_f32.data<float>()[j * k + p]);
  }
  return sum;
}

// |y - y_ref| allowed at (i, j): each x rounds by at most max|x_block| / 254, times the |w| it
// meets, plus f32 accumulation (1e-5 of Σ |w x|).
double error_bound(const Tensor& x, const Tensor& w_f32, int64_t i, int64_t j) {
  const int64_t k = x.size(1);
  const float* xr = x.data<float>() + i * k;
  const float* wr = w_f32.data<float>() + j * k;
  double bound = 0, magnitude = 0;
  for (int64_t b = 0; b < k / 32; ++b) {
    double amax = 0, wsum = 0;
    for (int e = 0; e < 32; ++e) {
      amax = std::max(amax, std::abs(double(xr[32 * b + e])));
      wsum += std::abs(double(wr[32 * b + e]));
      magnitude += std::abs(double(xr[32 * b + e]) * wr[32 * b + e]);
    }
    bound += amax / 254 * wsum;
  }
  return bound * 1.001 + 1e-5 * magnitude + 1e-6;
}

// x rounded as the kernels round it (blocks of 32, d = max|x| / 127), back in f32: with it the
// kernels' result is exact up to f32 summation.
Tensor rounded_activations(const Tensor& x) {
  Tensor out = Tensor::empty(DType::kF32, {x.size(0), x.size(1)});
  for (int64_t b = 0; b < x.numel() / 32; ++b) {
    const float* in = x.data<float>() + 32 * b;
    float amax = 0;
    for (int e = 0; e < 32; ++e) amax = std::max(amax, std::abs(in[e]));
    for (int e = 0; e < 32; ++e) {
      const float q = amax > 0 ? std::nearbyint(in[e] * (127.0f / amax)) : 0.0f;
      out.data<float>()[32 * b + e] = q * (amax / 127.0f);
    }
  }
  return out;
}

TEST(QuantGemm, EveryFormatAndLevelWithinTheRoundingBoundOfTheF32Reference) {
  for (const Format& f : kFormats) {
    const int64_t block = dtype_block_elems(f.dtype);
    // k = 3 blocks of 32 (an odd count: the AVX-512 pair loop's tail) or 2 super-blocks.
    for (const int64_t k : {block == 32 ? int64_t{96} : int64_t{512}, 2 * block * 5}) {
      std::mt19937 rng(static_cast<uint32_t>(k) * 31 + static_cast<uint32_t>(f.dtype));
      const int64_t n = 13;
      Tensor w = random_weights(f.dtype, n, k, rng);
      Tensor w_f32 = dequantized(w, f.ggml);
      // m = 1: Q4_0 / Q4_1 read without unpacking (SIMD levels); m = 6, 7: unpacked, and
      // rows taken four at a time with a tail of 2 or 3; m = 33: dequantized for BLAS.
      for (const int64_t m : {1, 6, 7, 33}) {
        Tensor x = random_f32({m, k}, rng), bias = random_f32({n}, rng);
        Tensor y_ref = poisoned(m, n), y_rounded = poisoned(m, n);
        ref::gemm({x, w_f32, bias, y_ref});
        ref::gemm({rounded_activations(x), w_f32, bias, y_rounded});
        std::vector<float> scalar;
        for (const KernelLevel level : runnable_levels()) {
          SCOPED_TRACE(std::string(dtype_name(f.dtype)) + " k=" + std::to_string(k) +
                       " m=" + std::to_string(m) + " " + kernel_level_name(level));
          Tensor y = poisoned(m, n);
          quant_gemm({x, w, bias, y}, level);
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              const float got = y.data<float>()[i * n + j], want = y_ref.data<float>()[i * n + j];
              ASSERT_LE(std::abs(double(got) - want), error_bound(x, w_f32, i, j))
                  << "y[" << i << ", " << j << "] = " << got << ", reference " << want;
              // f32 activations (Q8_0 always, everything from 32 rows): no rounding to match.
              if (m >= 32 || f.dtype == DType::kQ8_0) {
                ASSERT_NEAR(got, want, 1e-5 * magnitude(x, w_f32, i, j) + 1e-6);
                continue;
              }
              const float exact = y_rounded.data<float>()[i * n + j];
              ASSERT_NEAR(got, exact, 1e-5 * magnitude(x, w_f32, i, j) + 1e-6)
                  << "y[" << i << ", " << j << "] against the rounded activations";
            }
          }
          // The levels share the integer sums: they differ only by f32 summation order.
          if (m >= 32) {
            // Dequantized, through BLAS: the f32 reference up to f32 rounding.
            for (int64_t i = 0; i < m; ++i) {
              for (int64_t j = 0; j < n; ++j) {
                ASSERT_NEAR(y.data<float>()[i * n + j], y_ref.data<float>()[i * n + j],
                            1e-5 * magnitude(x, w_f32, i, j) + 1e-6);
              }
            }
          } else if (scalar.empty()) {
            scalar.assign(y.data<float>(), y.data<float>() + m * n);
          } else {
            for (int64_t e = 0; e < m * n; ++e) {
              ASSERT_NEAR(y.data<float>()[e], scalar[e], 1e-4 * (1 + std::abs(scalar[e])));
            }
          }
        }
      }
    }
  }
}

TEST(QuantGemm, ProductionGemmAndEmbedTakeBlockWeights) {
  std::mt19937 rng(7);
  const int64_t n = 40, k = 256;
  Tensor w = random_weights(DType::kQ4_K, n, k, rng);
  Tensor w_f32 = dequantized(w, GgmlType::kQ4_K);
  Tensor x = random_f32({3, k}, rng);
  Tensor y = poisoned(3, n), y_level = poisoned(3, n);
  gemm({x, w, {}, y});
  quant_gemm({x, w, {}, y_level}, kernel_level());
  EXPECT_EQ(0, std::memcmp(y.data<float>(), y_level.data<float>(), y.nbytes()));

  // embed: rows of a block table come out dequantized, as models/gguf dequantizes them.
  Tensor ids = Tensor::empty(DType::kI32, {3});
  ids.data<int32_t>()[0] = 39;
  ids.data<int32_t>()[1] = 0;
  ids.data<int32_t>()[2] = 17;
  Tensor out = poisoned(3, k);
  embed(ids, w, out);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(0, std::memcmp(out.data<float>() + r * k,
                             w_f32.data<float>() + ids.data<int32_t>()[r] * k, k * sizeof(float)));
  }
}

TEST(QuantGemm, BlockTensorsCountElementsAndSliceWholeRows) {
  Tensor w = Tensor::empty(DType::kQ4_1, {6, 64});
  EXPECT_EQ(w.nbytes(), 6u * 2 * 20);
  const TensorView rows = w.view().slice(0, 2, 5);
  EXPECT_EQ(static_cast<const char*>(rows.raw()) - w.data<char>(), 2 * 2 * 20);
  EXPECT_EQ(rows.nbytes(), 3u * 2 * 20);
}

TEST(CpuFeatures, KernelLevelFromTheEnvironment) {
  EXPECT_EQ(*parse_kernel_level("avx512vnni"), KernelLevel::kAvx512Vnni);
  EXPECT_EQ(*parse_kernel_level("scalar"), KernelLevel::kScalar);
  const StatusOr<KernelLevel> bad = parse_kernel_level("avx1024");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("avx1024"), std::string_view::npos);

  const char* saved = std::getenv("SIEVE_CPU_KERNELS");
  const std::string saved_value = saved ? saved : "";
  ::setenv("SIEVE_CPU_KERNELS", "scalar", 1);
  EXPECT_EQ(*selected_kernel_level(), KernelLevel::kScalar);
  ::setenv("SIEVE_CPU_KERNELS", "nonsense", 1);
  EXPECT_FALSE(selected_kernel_level().ok());
  ::unsetenv("SIEVE_CPU_KERNELS");
  EXPECT_EQ(*selected_kernel_level(), best_kernel_level(cpu_features()));
  if (saved) ::setenv("SIEVE_CPU_KERNELS", saved_value.c_str(), 1);

  // What the test machine runs, for the log of CI.
  std::printf("%s\n", describe_cpu_kernels().c_str());
  EXPECT_GE(cpu_thread_budget(), 1);
}

}  // namespace
}  // namespace sieve::kernels::cpu
