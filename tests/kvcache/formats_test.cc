#include "kvcache/formats.h"

#include <gtest/gtest.h>

namespace sieve::kvcache {
namespace {

TEST(KvFormat, TokenBytesCountKeysAndValuesOfEveryLayerAndHead) {
  // SmolLM2-135M: 30 layers, 3 KV heads, head_dim 64.
  EXPECT_EQ(kv_format(KvFormatId::kBF16).bytes_per_token(30, 3, 64), 2u * 30 * 3 * 64 * 2);
  EXPECT_EQ(kv_format(KvFormatId::kF32).bytes_per_token(30, 3, 64), 2u * 30 * 3 * 64 * 4);
  EXPECT_EQ(kv_format(KvFormatId::kBF16).bytes_per_token_head(64), 128u);
}

TEST(KvFormat, QuantizedFormatsCountTheirScales) {
  // fp8 and int8: one byte per element and one half scale per (token, KV head).
  EXPECT_EQ(kv_format(KvFormatId::kFp8E4M3).bytes_per_token_head(64), 64u + 2);
  EXPECT_EQ(kv_format(KvFormatId::kInt8).bytes_per_token_head(128), 128u + 2);
  // int4: half a byte per element, a half scale and a u8 zero point per 32 channels.
  const KvFormat& int4 = kv_format(KvFormatId::kInt4);
  EXPECT_EQ(int4.data_bytes(64), 32u);
  EXPECT_EQ(int4.num_scales(64), 2);
  EXPECT_EQ(int4.meta_bytes(64), 6u);
  EXPECT_EQ(int4.num_scales(80), 3);  // a last, partial group
  EXPECT_EQ(int4.bytes_per_token_head(80), 40u + 9);
  EXPECT_EQ(kv_format(KvFormatId::kBF16).meta_bytes(64), 0u);
}

TEST(KvFormat, QuantizedTokensCostWhatTheIssueTargets) {
  // Against bf16 at head_dim 64 and 128: fp8/int8 <= 0.52x, int4 <= 0.30x.
  for (int head_dim : {64, 128}) {
    const double bf16 = kv_format(KvFormatId::kBF16).bytes_per_token(32, 8, head_dim);
    const auto ratio = [&](KvFormatId id) {
      return kv_format(id).bytes_per_token(32, 8, head_dim) / bf16;
    };
    EXPECT_LE(ratio(KvFormatId::kFp8E4M3), 0.52) << head_dim;
    EXPECT_LE(ratio(KvFormatId::kInt8), 0.52) << head_dim;
    EXPECT_LE(ratio(KvFormatId::kInt4), 0.30) << head_dim;
  }
}

TEST(KvFormat, TokensPerPageFollowThePageBytes) {
  const KvGeometry geometry{2, 2, 4};  // bf16: 64 bytes per token, f32: 128
  EXPECT_EQ(tokens_per_page(1024, KvFormatId::kBF16, geometry), 16);
  EXPECT_EQ(tokens_per_page(1024, KvFormatId::kF32, geometry), 8);
  EXPECT_EQ(tokens_per_page(1000, KvFormatId::kBF16, geometry), 15);  // rounds down
  EXPECT_EQ(tokens_per_page(100, KvFormatId::kF32, geometry), 0);
}

TEST(KvFormat, TableRowsAreInIdOrder) {
  for (const KvFormat& format : kKvFormats) {
    EXPECT_EQ(&kv_format(format.id), &format) << format.name;
  }
  EXPECT_EQ(kv_format(KvFormatId::kBF16).dtype, DType::kBF16);
  EXPECT_EQ(kv_format(KvFormatId::kF32).dtype, DType::kF32);
  EXPECT_EQ(kv_format(KvFormatId::kInt4).dtype, DType::kU8);
}

TEST(KvFormat, ParseAcceptsKnownNamesAndListsThemOtherwise) {
  EXPECT_EQ(parse_kv_format("bf16").value(), KvFormatId::kBF16);
  EXPECT_EQ(parse_kv_format("f32").value(), KvFormatId::kF32);
  EXPECT_EQ(parse_kv_format("fp8_e4m3").value(), KvFormatId::kFp8E4M3);
  EXPECT_EQ(parse_kv_format("int8").value(), KvFormatId::kInt8);
  EXPECT_EQ(parse_kv_format("int4").value(), KvFormatId::kInt4);
  const StatusOr<KvFormatId> bad = parse_kv_format("int3");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("int3"), std::string_view::npos);
  EXPECT_NE(bad.status().message().find("bf16"), std::string_view::npos);
}

}  // namespace
}  // namespace sieve::kvcache
