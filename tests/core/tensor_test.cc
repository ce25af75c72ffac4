#include "core/tensor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

namespace sieve {
namespace {

TEST(TensorView, SliceAndSelectShareMemory) {
  Tensor t = Tensor::empty(DType::kF32, {4, 6});
  for (int i = 0; i < 24; ++i) t.data<float>()[i] = static_cast<float>(i);
  TensorView cols = t.view().slice(1, 2, 5);
  EXPECT_EQ(cols.size(0), 4);
  EXPECT_EQ(cols.size(1), 3);
  EXPECT_FALSE(cols.is_contiguous());
  EXPECT_EQ(cols.data<float>()[0], 2.0f);
  EXPECT_EQ(cols.data<float>()[cols.stride(0)], 8.0f);
  TensorView row = t.view().select(0, 2);
  EXPECT_EQ(row.ndim(), 1);
  EXPECT_EQ(row.data<float>()[5], 17.0f);
}

TEST(TensorView, UnflattenKeepsStrides) {
  Tensor t = Tensor::empty(DType::kF32, {3, 10});
  TensorView heads = t.view().slice(1, 2, 10).unflatten(1, 4, 2);
  ASSERT_EQ(heads.ndim(), 3);
  EXPECT_EQ(heads.size(1), 4);
  EXPECT_EQ(heads.stride(0), 10);
  EXPECT_EQ(heads.stride(1), 2);
  EXPECT_EQ(heads.stride(2), 1);
  EXPECT_EQ(heads.data<float>(), t.data<float>() + 2);
}

TEST(TensorView, ReshapeChecksElementCount) {
  Tensor t = Tensor::empty(DType::kF32, {2, 6});
  TensorView r = t.view().reshape({3, 4});
  EXPECT_EQ(r.size(0), 3);
  EXPECT_DEATH(t.view().reshape({5, 2}), "check failed");
}

TEST(DType, HalfConversionsRoundTripEveryValue) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const float f = f16_to_f32(static_cast<uint16_t>(bits));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), bits) << "f16 bits " << bits;
    const float b = bf16_to_f32(static_cast<uint16_t>(bits));
    if (std::isnan(b)) continue;
    ASSERT_EQ(f32_to_bf16(b), bits) << "bf16 bits " << bits;
  }
}

TEST(DType, HalfRoundsToNearestEven) {
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.0f + 1.0f / 2048)), 1.0f);  // tie, rounds to even
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.0f + 3.0f / 2048)), 1.0f + 2.0f / 1024);
  EXPECT_EQ(f16_to_f32(f32_to_f16(65520.0f)), INFINITY);
  EXPECT_EQ(f16_to_f32(f32_to_f16(5.96e-8f)), 5.9604645e-8f);  // smallest subnormal
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)), 1.0f + 2.0f / 128);
}

}  // namespace
}  // namespace sieve
