#include "models/gguf/quant.h"

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/models/gguf/test_util.h"

namespace sieve::models::gguf {
namespace {

using testing::make_temp_dir;
using testing::read_bytes;
using testing::read_floats;
using testing::run_python;

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

class QuantTest : public ::testing::TestWithParam<GgmlType> {
 protected:
  // One directory of random blocks and the `gguf` package's dequantization, for all formats.
  static void SetUpTestSuite() {
    dir_ = new std::string(make_temp_dir("quant"));
    ok_ = run_python(
        "make_quant_blocks.py",
        *dir_ + " " + std::to_string(::testing::UnitTest::GetInstance()->random_seed() + 17));
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string* dir_;
  static bool ok_;
};
std::string* QuantTest::dir_ = nullptr;
bool QuantTest::ok_ = false;

// Every element equals the reference bit for bit: the formats' math is a product (or a product
// and a sum) of f32 values, which IEEE arithmetic makes exact to reproduce.
TEST_P(QuantTest, MatchesGgufPackageBitForBit) {
  ASSERT_TRUE(ok_);
  const TypeTraits* traits = find_type_traits(static_cast<uint32_t>(GetParam()));
  ASSERT_NE(traits, nullptr);
  ASSERT_NE(traits->dequantize, nullptr) << traits->name;
  const std::string base = *dir_ + "/" + std::string(traits->name);
  const std::vector<std::byte> raw = read_bytes(base + ".raw");
  const std::vector<float> expected = read_floats(base + ".f32");
  ASSERT_FALSE(expected.empty());
  ASSERT_EQ(raw.size() % traits->block_bytes, 0u);
  const int64_t num_blocks = static_cast<int64_t>(raw.size()) / traits->block_bytes;
  ASSERT_EQ(num_blocks * traits->block_size, static_cast<int64_t>(expected.size()));

  std::vector<float> actual(expected.size(), -1.0f);
  ASSERT_TRUE(
      dequantize(traits->type, raw.data(), static_cast<int64_t>(actual.size()), actual.data())
          .ok());
  int64_t mismatches = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (float_bits(actual[i]) != float_bits(expected[i]) && ++mismatches <= 5) {
      ADD_FAILURE() << traits->name << " element " << i << " (block " << i / traits->block_size
                    << "): got " << actual[i] << ", expected " << expected[i];
    }
  }
  EXPECT_EQ(mismatches, 0);
}

INSTANTIATE_TEST_SUITE_P(AllFormats, QuantTest,
                         ::testing::Values(GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16,
                                           GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_1,
                                           GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ4_K,
                                           GgmlType::kQ5_K, GgmlType::kQ6_K),
                         [](const ::testing::TestParamInfo<GgmlType>& param_info) {
                           return std::string(
                               find_type_traits(static_cast<uint32_t>(param_info.param))->name);
                         });

TEST(QuantTableTest, SizesAndNamesFollowGgml) {
  struct Expected {
    uint32_t id;
    const char* name;
    int64_t block_size, block_bytes;
    bool dequantizable;
  };
  for (const Expected& e : {Expected{0, "F32", 1, 4, true},
                            {1, "F16", 1, 2, true},
                            {30, "BF16", 1, 2, true},
                            {8, "Q8_0", 32, 34, true},
                            {2, "Q4_0", 32, 18, true},
                            {3, "Q4_1", 32, 20, true},
                            {6, "Q5_0", 32, 22, true},
                            {7, "Q5_1", 32, 24, true},
                            {12, "Q4_K", 256, 144, true},
                            {13, "Q5_K", 256, 176, true},
                            {14, "Q6_K", 256, 210, true},
                            {10, "Q2_K", 256, 84, false},
                            {11, "Q3_K", 256, 110, false},
                            {23, "IQ4_XS", 256, 136, false}}) {
    const TypeTraits* t = find_type_traits(e.id);
    ASSERT_NE(t, nullptr) << e.id;
    EXPECT_EQ(static_cast<uint32_t>(t->type), e.id);
    EXPECT_EQ(t->name, e.name);
    EXPECT_EQ(t->block_size, e.block_size) << e.name;
    EXPECT_EQ(t->block_bytes, e.block_bytes) << e.name;
    EXPECT_EQ(t->dequantize != nullptr, e.dequantizable) << e.name;
  }
  for (uint32_t unknown : {4u, 5u, 31u, 42u, 1000u, 0xFFFFFFFFu}) {
    EXPECT_EQ(find_type_traits(unknown), nullptr) << unknown;
  }
}

TEST(QuantTableTest, DequantizeRejectsPartialBlocksAndUnsupportedTypes) {
  std::vector<std::byte> src(1024);
  std::vector<float> out(1024);
  EXPECT_EQ(dequantize(GgmlType::kQ8_0, src.data(), 33, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dequantize(GgmlType::kQ2_K, src.data(), 256, out.data()).code(),
            absl::StatusCode::kUnimplemented);
  // Empty tensors are valid; found by fuzz/gguf_fuzz.cc (memcpy to a null `out`).
  EXPECT_TRUE(dequantize(GgmlType::kF32, nullptr, 0, nullptr).ok());
  EXPECT_TRUE(dequantize(GgmlType::kQ4_K, nullptr, 0, nullptr).ok());
}

// A hand-built block whose values are known without any reference implementation.
TEST(QuantBlockTest, Q4_0HandBuiltBlock) {
  BlockQ4_0 block{};
  block.d = 0x4000;  // 2.0 in f16
  for (int i = 0; i < 16; ++i) block.qs[i] = static_cast<uint8_t>(i | ((15 - i) << 4));
  float out[kQK];
  dequantize_block(block, out);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(out[i], 2.0f * static_cast<float>(i - 8));
    EXPECT_EQ(out[16 + i], 2.0f * static_cast<float>(15 - i - 8));
  }
}

}  // namespace
}  // namespace sieve::models::gguf
