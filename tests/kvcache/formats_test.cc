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
}

TEST(KvFormat, ParseAcceptsKnownNamesAndListsThemOtherwise) {
  EXPECT_EQ(parse_kv_format("bf16").value(), KvFormatId::kBF16);
  EXPECT_EQ(parse_kv_format("f32").value(), KvFormatId::kF32);
  const StatusOr<KvFormatId> bad = parse_kv_format("int3");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("int3"), std::string_view::npos);
  EXPECT_NE(bad.status().message().find("bf16"), std::string_view::npos);
}

}  // namespace
}  // namespace sieve::kvcache
