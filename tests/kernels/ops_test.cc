// The CPU production ops against their ref:: specification and against formulas written out
// here, on fresh seeded random inputs.

#include "kernels/cpu/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace sieve::kernels::cpu {
namespace {

Tensor random_tensor(std::initializer_list<int64_t> shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t = Tensor::empty(DType::kF32, shape);
  std::normal_distribution<float> normal(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

Tensor poisoned(std::initializer_list<int64_t> shape) {
  Tensor t = Tensor::empty(DType::kF32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = NAN;
  return t;
}

double max_rel_error(const float* a, const float* b, int64_t n) {
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    max_diff = std::max(max_diff, std::abs(static_cast<double>(a[i]) - b[i]));
    max_ref = std::max(max_ref, std::abs(static_cast<double>(b[i])));
  }
  return max_diff / std::max(max_ref, 1e-30);
}

TEST(CpuOps, GemmMatchesReferenceWithBias) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    const int64_t m = 1 + rng() % 40, n = 1 + rng() % 70, k = 1 + rng() % 90;
    Tensor x = random_tensor({m, k}, rng), w = random_tensor({n, k}, rng), b = random_tensor({n}, rng);
    Tensor y = poisoned({m, n}), y_ref = poisoned({m, n});
    gemm({x, w, b, y});
    ref::gemm({x, w, b, y_ref});
    EXPECT_LT(max_rel_error(y.data<float>(), y_ref.data<float>(), m * n), 1e-5);
    // One element by hand.
    double expect = b.data<float>()[n - 1];
    for (int64_t p = 0; p < k; ++p) expect += double(x.data<float>()[p]) * w.data<float>()[(n - 1) * k + p];
    EXPECT_NEAR(y_ref.data<float>()[n - 1], expect, 1e-5 * (1 + std::abs(expect)));
  }
}

TEST(CpuOps, SingleRowGemmMatchesReference) {
  std::mt19937 rng(21);
  Tensor x = random_tensor({1, 300}, rng), w = random_tensor({77, 300}, rng), b = random_tensor({77}, rng);
  for (bool bias : {false, true}) {
    Tensor y = poisoned({1, 77}), y_ref = poisoned({1, 77});
    gemm({x, w, bias ? b.view() : TensorView(), y});
    ref::gemm({x, w, bias ? b.view() : TensorView(), y_ref});
    EXPECT_LT(max_rel_error(y.data<float>(), y_ref.data<float>(), 77), 1e-5) << bias;
  }
}

TEST(CpuOps, GemmReadsStridedRowsAndWritesStridedOutput) {
  std::mt19937 rng(7);
  Tensor big_x = random_tensor({5, 12}, rng), w = random_tensor({3, 8}, rng);
  Tensor big_y = poisoned({5, 10});
  const TensorView x = big_x.view().slice(1, 2, 10), y = big_y.view().slice(1, 4, 7);
  gemm({x, w, {}, y});
  Tensor y_ref = poisoned({5, 3});
  ref::gemm({x, w, {}, y_ref});
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 3; ++j) EXPECT_NEAR(y.data<float>()[i * 10 + j], y_ref.data<float>()[i * 3 + j], 1e-5);
    EXPECT_TRUE(std::isnan(big_y.data<float>()[i * 10 + 3]));  // untouched outside the view
  }
}

TEST(CpuOps, RmsNormFollowsItsFormula) {
  std::mt19937 rng(11);
  Tensor x = random_tensor({7, 33}, rng, 3.0f), w = random_tensor({33}, rng);
  Tensor out = poisoned({7, 33}), out_ref = poisoned({7, 33});
  rms_norm(out, x, w, 1e-6f);
  ref::rms_norm(out_ref, x, w, 1e-6f);
  EXPECT_EQ(max_rel_error(out.data<float>(), out_ref.data<float>(), out.numel()), 0.0);
  for (int r = 0; r < 7; ++r) {
    double sum = 0;
    for (int i = 0; i < 33; ++i) sum += double(x.data<float>()[r * 33 + i]) * x.data<float>()[r * 33 + i];
    const double inv = 1.0 / std::sqrt(sum / 33 + 1e-6);
    for (int i = 0; i < 33; ++i) {
      EXPECT_NEAR(out.data<float>()[r * 33 + i], w.data<float>()[i] * x.data<float>()[r * 33 + i] * inv, 1e-5);
    }
  }
}

TEST(CpuOps, AddRmsNormUpdatesTheResidual) {
  std::mt19937 rng(12);
  Tensor res = random_tensor({4, 16}, rng), x = random_tensor({4, 16}, rng), w = random_tensor({16}, rng);
  Tensor res2 = Tensor::empty(DType::kF32, {4, 16});
  std::memcpy(res2.data<float>(), res.data<float>(), res.nbytes());
  std::vector<float> sum(64);
  for (int i = 0; i < 64; ++i) sum[i] = res.data<float>()[i] + x.data<float>()[i];
  Tensor out = poisoned({4, 16}), out_ref = poisoned({4, 16});
  add_rms_norm(out, res, x, w, 1e-5f);
  ref::add_rms_norm(out_ref, res2, x, w, 1e-5f);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(res.data<float>()[i], sum[i]);
  EXPECT_EQ(max_rel_error(out.data<float>(), out_ref.data<float>(), 64), 0.0);
}

TEST(CpuOps, RopeRotatesHalvesByPositionTimesFrequency) {
  std::mt19937 rng(13);
  const int64_t n = 5, heads = 3, kv_heads = 1, dim = 8;
  Tensor q = random_tensor({n, heads, dim}, rng), k = random_tensor({n, kv_heads, dim}, rng);
  Tensor q0 = Tensor::empty(DType::kF32, {n, heads, dim});
  std::memcpy(q0.data<float>(), q.data<float>(), q.nbytes());
  std::vector<int32_t> positions = {0, 1, 7, 100, 4095};
  std::vector<float> inv_freq = {1.0f, 0.1f, 0.01f, 0.001f};
  rope({q, k, TensorView(positions.data(), DType::kI32, {n}), TensorView(inv_freq.data(), DType::kF32, {4}), 1.0f});
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* before = q0.data<float>() + (t * heads + h) * dim;
      const float* after = q.data<float>() + (t * heads + h) * dim;
      for (int i = 0; i < 4; ++i) {
        // (a + ib) * e^{iθ}: the pair (x_i, x_{i+d/2}) as a complex number.
        const double theta = double(positions[t]) * inv_freq[i];
        const double re = before[i] * std::cos(theta) - before[i + 4] * std::sin(theta);
        const double im = before[i + 4] * std::cos(theta) + before[i] * std::sin(theta);
        EXPECT_NEAR(after[i], re, 2e-4);
        EXPECT_NEAR(after[i + 4], im, 2e-4);
      }
    }
  }
}

TEST(CpuOps, SiluMulAndSoftmaxMatchFormulas) {
  std::mt19937 rng(14);
  Tensor gu = random_tensor({3, 20}, rng, 2.0f), out = poisoned({3, 10});
  silu_mul(out, gu);
  for (int r = 0; r < 3; ++r) {
    for (int i = 0; i < 10; ++i) {
      const double g = gu.data<float>()[r * 20 + i], u = gu.data<float>()[r * 20 + 10 + i];
      EXPECT_NEAR(out.data<float>()[r * 10 + i], g / (1 + std::exp(-g)) * u, 1e-5);
    }
  }
  Tensor x = random_tensor({4, 50}, rng, 10.0f);
  Tensor x_ref = Tensor::empty(DType::kF32, {4, 50});
  std::memcpy(x_ref.data<float>(), x.data<float>(), x.nbytes());
  softmax(x);
  ref::softmax(x_ref);
  for (int r = 0; r < 4; ++r) {
    double sum = 0;
    for (int i = 0; i < 50; ++i) sum += x.data<float>()[r * 50 + i];
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  EXPECT_EQ(max_rel_error(x.data<float>(), x_ref.data<float>(), 200), 0.0);
}

TEST(CpuOps, EmbedGathersRows) {
  std::mt19937 rng(15);
  Tensor table = random_tensor({10, 6}, rng), out = poisoned({3, 6});
  std::vector<int32_t> ids = {9, 0, 4};
  embed(TensorView(ids.data(), DType::kI32, {3}), table, out);
  for (int r = 0; r < 3; ++r) {
    for (int i = 0; i < 6; ++i) EXPECT_EQ(out.data<float>()[r * 6 + i], table.data<float>()[ids[r] * 6 + i]);
  }
}

}  // namespace
}  // namespace sieve::kernels::cpu

namespace sieve::kernels::cpu {
namespace {

TEST(CpuOps, FillRandomIsUniformWithTheAskedMomentsAndDeterministic) {
  Tensor a = Tensor::empty(DType::kF32, {100000}), b = Tensor::empty(DType::kF32, {100000});
  fill_random(a, 5, 1.0f, 0.1f);
  fill_random(b, 5, 1.0f, 0.1f);
  double sum = 0, sum_sq = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const float x = a.data<float>()[i];
    ASSERT_EQ(x, b.data<float>()[i]);
    ASSERT_GE(x, 1.0f - 0.1733f);
    ASSERT_LE(x, 1.0f + 0.1733f);
    sum += x;
    sum_sq += double(x) * x;
  }
  const double mean = sum / a.numel(), var = sum_sq / a.numel() - mean * mean;
  EXPECT_NEAR(mean, 1.0, 2e-3);
  EXPECT_NEAR(std::sqrt(var), 0.1, 2e-3);
  fill_random(b, 6, 1.0f, 0.1f);
  EXPECT_NE(a.data<float>()[0], b.data<float>()[0]);
}

}  // namespace
}  // namespace sieve::kernels::cpu
