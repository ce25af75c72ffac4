#include "models/gguf/gguf_file.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/models/gguf/test_util.h"

namespace sieve::models::gguf {
namespace {

using testing::gguf_fixture_dir;
using ::testing::HasSubstr;
using testing::make_temp_dir;
using testing::offset_after_string;
using testing::poke;
using testing::read_bytes;
using testing::read_floats;
using ::testing::StartsWith;
using testing::write_bytes;

class GgufFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = gguf_fixture_dir();
    ASSERT_FALSE(dir_.empty());
    path_ = dir_ + "/metadata.gguf";
    bytes_ = read_bytes(path_);
    ASSERT_GT(bytes_.size(), 1000u);
  }

  // Parses `bytes` as a file named "bad.gguf" and expects an error naming it and `problem`.
  static void expect_error(const std::vector<std::byte>& bytes, const std::string& problem) {
    const StatusOr<GgufFile> file = GgufFile::parse(bytes, "bad.gguf");
    ASSERT_FALSE(file.ok()) << "expected: " << problem;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(file.status().message()), StartsWith("bad.gguf: "));
    EXPECT_THAT(std::string(file.status().message()), HasSubstr(problem));
  }

  // The offset of the type field of tensor `name`'s info.
  size_t tensor_type_offset(const std::string& name, int num_dims) const {
    const size_t at = offset_after_string(bytes_, name, /*last=*/true);
    EXPECT_NE(at, SIZE_MAX) << name;
    return at + 4 + 8 * static_cast<size_t>(num_dims);
  }

  std::string dir_, path_;
  std::vector<std::byte> bytes_;
};

TEST_F(GgufFileTest, ParsesEveryMetadataType) {
  StatusOr<GgufFile> opened = GgufFile::open(path_);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& f = *opened;
  EXPECT_EQ(f.path(), path_);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  ASSERT_NE(f.file(), nullptr);

  EXPECT_EQ(*f.get_string("general.architecture"), "testarch");
  EXPECT_EQ(f.find("general.alignment")->type(), ValueType::kU32);
  struct IntCase {
    const char* key;
    ValueType type;
    int64_t value;
  };
  for (const IntCase& c : {IntCase{"t.u8", ValueType::kU8, 200},
                           {"t.i8", ValueType::kI8, -100},
                           {"t.u16", ValueType::kU16, 65000},
                           {"t.i16", ValueType::kI16, -30000},
                           {"t.u32", ValueType::kU32, 4000000000},
                           {"t.i32", ValueType::kI32, -2000000000},
                           {"t.i64", ValueType::kI64, -(int64_t{1} << 62) - 3}}) {
    ASSERT_TRUE(f.has(c.key)) << c.key;
    EXPECT_EQ(f.find(c.key)->type(), c.type) << c.key;
    EXPECT_EQ(*f.get_int(c.key), c.value) << c.key;
    EXPECT_EQ(*f.get_double(c.key), static_cast<double>(c.value)) << c.key;
  }
  const Value* u64 = f.find("t.u64");
  EXPECT_EQ(u64->type(), ValueType::kU64);
  EXPECT_EQ(*u64->as_uint(), (uint64_t{1} << 63) + 5);
  EXPECT_FALSE(u64->as_int().has_value());
  EXPECT_FALSE(f.find("t.i8")->as_uint().has_value());
  EXPECT_EQ(f.find("t.f32")->type(), ValueType::kF32);
  EXPECT_EQ(*f.get_double("t.f32"), 1.5);
  EXPECT_EQ(f.find("t.f64")->type(), ValueType::kF64);
  EXPECT_EQ(*f.get_double("t.f64"), 3.141592653589793);
  EXPECT_TRUE(*f.get_bool("t.bool"));
  EXPECT_FALSE(*f.get_bool("t.false"));
  EXPECT_EQ(*f.get_string("t.str"), "h\xc3\xa9llo \xf0\x9f\x98\x80");
  EXPECT_EQ(*f.get_string("t.empty_str"), "");

  EXPECT_EQ(f.find("t.arr_i32")->element_type(), ValueType::kI32);
  EXPECT_EQ(*f.get_int_array("t.arr_i32"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.find("t.arr_u8")->element_type(), ValueType::kU8);
  EXPECT_EQ(*f.get_int_array("t.arr_u8"), (std::vector<int64_t>{1, 2, 255}));
  EXPECT_EQ(*f.get_int_array("t.arr_i16"), (std::vector<int64_t>{-7, 7}));
  const Value* arr_u64 = f.find("t.arr_u64");
  EXPECT_EQ(*arr_u64->element(0).as_uint(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(*arr_u64->element(1).as_uint(), 0u);
  EXPECT_EQ(*f.get_int_array("t.arr_i64"),
            (std::vector<int64_t>{std::numeric_limits<int64_t>::min(),
                                  std::numeric_limits<int64_t>::max()}));
  EXPECT_EQ(*f.find("t.arr_f64")->element(1).as_double(), -1e300);
  EXPECT_EQ(*f.get_float_array("t.arr_f32"), (std::vector<float>{0.5f, -2.25f, 1e-3f}));
  const Value* arr_bool = f.find("t.arr_bool");
  ASSERT_EQ(arr_bool->size(), 3u);
  EXPECT_TRUE(*arr_bool->element(0).as_bool());
  EXPECT_FALSE(*arr_bool->element(1).as_bool());
  EXPECT_EQ(*f.get_string_array("t.arr_str"), (std::vector<std::string>{"a", "", "ccc"}));

  const Value* nested = f.find("t.nested");
  ASSERT_EQ(nested->element_type(), ValueType::kArray);
  ASSERT_EQ(nested->size(), 2u);
  EXPECT_EQ(nested->element(0).size(), 2u);
  EXPECT_EQ(*nested->element(0).element(1).as_int(), 2);
  EXPECT_EQ(*nested->element(1).element(0).as_int(), 3);
  EXPECT_EQ(*f.find("t.nested_str")->element(1).element(1).as_string(), "zz");
  const Value nested2 = f.find("t.nested2")->element(0).element(1);
  EXPECT_EQ(nested2.element_type(), ValueType::kF32);
  EXPECT_EQ(*nested2.element(1).as_double(), 3.0);
}

TEST_F(GgufFileTest, TypedGettersNameTheKey) {
  StatusOr<GgufFile> f = GgufFile::open(path_);
  ASSERT_TRUE(f.ok()) << f.status();
  const auto expect = [&](const Status& status, absl::StatusCode code, const std::string& text) {
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_THAT(std::string(status.message()), StartsWith(path_ + ": "));
    EXPECT_THAT(std::string(status.message()), HasSubstr(text));
  };
  expect(f->get_int("no.such.key").status(), absl::StatusCode::kNotFound, "'no.such.key'");
  expect(f->get_string("t.u8").status(), absl::StatusCode::kInvalidArgument, "'t.u8'");
  expect(f->get_int("t.u64").status(), absl::StatusCode::kInvalidArgument, "'t.u64'");
  expect(f->get_bool("t.str").status(), absl::StatusCode::kInvalidArgument, "must be a bool");
  expect(f->get_double("t.arr_f32").status(), absl::StatusCode::kInvalidArgument, "array");
  expect(f->get_string_array("t.arr_i32").status(), absl::StatusCode::kInvalidArgument,
         "'t.arr_i32' must be an array of strings");
  expect(f->get_int_array("t.arr_str").status(), absl::StatusCode::kInvalidArgument, "'t.arr_str'");
  expect(f->get_float_array("t.nested").status(), absl::StatusCode::kInvalidArgument, "'t.nested'");
}

TEST_F(GgufFileTest, TensorsMatchTheGgufPackage) {
  StatusOr<GgufFile> f = GgufFile::open(path_);
  ASSERT_TRUE(f.ok()) << f.status();
  std::ifstream listing(dir_ + "/metadata.tensors");
  std::string line;
  size_t index = 0;
  while (std::getline(listing, line)) {
    std::istringstream fields(line);
    std::string name;
    uint32_t type = 0;
    fields >> name >> type;
    std::vector<int64_t> dims;
    for (int64_t d; fields >> d;) dims.push_back(d);
    SCOPED_TRACE(name);
    const TensorInfo* info = f->find_tensor(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(&f->tensors()[index++], info) << "file order";
    EXPECT_EQ(static_cast<uint32_t>(info->type), type);
    EXPECT_EQ(info->dims, dims);
    EXPECT_EQ((info->data - f->file()->data()) % 64, 0);
    const std::vector<float> expected = read_floats(dir_ + "/metadata." + name + ".f32");
    ASSERT_EQ(info->numel, static_cast<int64_t>(expected.size()));
    std::vector<float> actual(expected.size());
    ASSERT_TRUE(dequantize(info->type, info->data, info->numel, actual.data()).ok());
    EXPECT_EQ(std::memcmp(actual.data(), expected.data(), expected.size() * 4), 0);
  }
  EXPECT_EQ(index, f->tensors().size());
  EXPECT_EQ(index, 8u);
  EXPECT_EQ(f->find_tensor("t.nope"), nullptr);
}

TEST_F(GgufFileTest, WrongMagicAndVersionNameTheFile) {
  const std::string dir = make_temp_dir("bad");
  std::vector<std::byte> bad = bytes_;
  bad[0] = std::byte{'X'};
  write_bytes(dir + "/magic.gguf", bad);
  const StatusOr<GgufFile> f = GgufFile::open(dir + "/magic.gguf");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(std::string(f.status().message()), dir + "/magic.gguf: not a GGUF file (bad magic)");

  for (const auto& [version, text] :
       {std::pair<uint32_t, std::string>{1, "unsupported GGUF version 1"},
        {4, "unsupported GGUF version 4"},
        {0x03000000, "big-endian"}}) {
    bad = bytes_;
    poke<uint32_t>(bad, 4, version);
    expect_error(bad, text);
  }
  expect_error({}, "truncated file: magic needs 4 bytes");
  EXPECT_FALSE(GgufFile::open(dir + "/does_not_exist.gguf").ok());
}

TEST_F(GgufFileTest, EveryTruncationOfTheHeaderAndMetadataFails) {
  StatusOr<GgufFile> f = GgufFile::parse(bytes_, "full");
  ASSERT_TRUE(f.ok()) << f.status();
  for (size_t size = 0; size < f->data_offset(); ++size) {
    SCOPED_TRACE("size " + std::to_string(size));
    expect_error(std::vector<std::byte>(bytes_.begin(), bytes_.begin() + size), "truncated");
  }
  // Inside the data section: each tensor must lie wholly in the file.
  for (const TensorInfo& t : f->tensors()) {
    const size_t end = static_cast<size_t>(t.data - bytes_.data()) + t.num_bytes;
    for (const size_t size : {end - 1, end - t.num_bytes / 2}) {
      SCOPED_TRACE(t.name + " cut at " + std::to_string(size));
      expect_error(std::vector<std::byte>(bytes_.begin(), bytes_.begin() + size),
                   "tensor '" + t.name + "' data out of bounds");
    }
  }
}

TEST_F(GgufFileTest, AbsurdCountsAndLengthsAreRejectedBeforeAllocating) {
  std::vector<std::byte> bad = bytes_;
  poke<uint64_t>(bad, 8, uint64_t{1} << 60);
  expect_error(bad, "absurd tensor count 1152921504606846976");
  bad = bytes_;
  poke<uint64_t>(bad, 16, uint64_t{1} << 60);
  expect_error(bad, "absurd metadata count");
  bad = bytes_;
  poke<uint64_t>(bad, 24, uint64_t{1} << 60);
  expect_error(bad, "absurd length 1152921504606846976 of metadata key #0");
  bad = bytes_;
  poke<uint64_t>(bad, offset_after_string(bytes_, "t.arr_i32") + 8, ~uint64_t{0});
  expect_error(bad, "absurd element count of value of metadata 't.arr_i32'");
  bad = bytes_;
  poke<uint64_t>(bad, offset_after_string(bytes_, "t.arr_str") + 8, uint64_t{1} << 61);
  expect_error(bad, "absurd string count");
  bad = bytes_;
  poke<uint64_t>(bad, offset_after_string(bytes_, "t.nested") + 8, uint64_t{1} << 62);
  expect_error(bad, "absurd array count");
  bad = bytes_;
  poke<uint64_t>(bad, offset_after_string(bytes_, "t.str") + 4, uint64_t{1} << 60);
  expect_error(bad, "absurd length 1152921504606846976 of value of metadata 't.str'");
}

TEST_F(GgufFileTest, BadTensorInfosAreRejected) {
  const size_t type_at = tensor_type_offset("t.q6_k", 2);
  std::vector<std::byte> bad = bytes_;
  poke<uint32_t>(bad, type_at, 1000);
  expect_error(bad, "tensor 't.q6_k' has unknown tensor type 1000");
  bad = bytes_;
  poke<uint32_t>(bad, type_at, 4);  // Q4_2, removed from ggml
  expect_error(bad, "unknown tensor type 4");
  bad = bytes_;
  poke<uint64_t>(bad, type_at + 4, uint64_t{1} << 40);
  expect_error(bad, "tensor 't.q6_k' data out of bounds");
  bad = bytes_;
  poke<uint64_t>(bad, type_at + 4, ~uint64_t{63});
  expect_error(bad, "data out of bounds");
  bad = bytes_;
  poke<uint64_t>(bad, type_at + 4, 64 + 1);
  expect_error(bad, "not a multiple of the alignment 64");
  bad = bytes_;
  poke<uint64_t>(bad, type_at + 4, 0);  // on top of t.f32
  expect_error(bad, "overlaps");

  const size_t dims_at = offset_after_string(bytes_, "t.f32", /*last=*/true) + 4;
  bad = bytes_;
  poke<uint64_t>(bad, dims_at, uint64_t{1} << 62);
  poke<uint64_t>(bad, dims_at + 8, uint64_t{1} << 62);
  expect_error(bad, "tensor 't.f32': the product of its dimensions overflows int64");
  bad = bytes_;
  poke<uint64_t>(bad, dims_at, ~uint64_t{0});
  expect_error(bad, "overflows");
  bad = bytes_;
  poke<uint64_t>(bad, dims_at, uint64_t{1} << 40);
  expect_error(bad, "out of bounds");
  bad = bytes_;
  poke<uint32_t>(bad, dims_at - 4, 5);
  expect_error(bad, "tensor 't.f32' has 5 dimensions");
  bad = bytes_;  // a Q6_K row must hold whole 256-element blocks
  poke<uint64_t>(bad, offset_after_string(bytes_, "t.q6_k", /*last=*/true) + 4, 255);
  expect_error(bad, "a row of 255 elements is not a whole number of Q6_K blocks");
}

TEST_F(GgufFileTest, BadMetadataIsRejected) {
  std::vector<std::byte> bad = bytes_;
  poke<uint32_t>(bad, offset_after_string(bytes_, "t.u16"), 13);
  expect_error(bad, "unknown value type 13 of value of metadata 't.u16'");
  bad = bytes_;
  poke<uint32_t>(bad, offset_after_string(bytes_, "t.arr_i32") + 4, 77);
  expect_error(bad, "unknown value type 77");
  bad = bytes_;  // rename t.i8 to t.u8
  bad[offset_after_string(bytes_, "t.i8") - 2] = std::byte{'u'};
  expect_error(bad, "duplicate metadata key 't.u8'");
  for (const uint32_t alignment : {0u, 48u, 0x80000000u}) {
    bad = bytes_;
    poke<uint32_t>(bad, offset_after_string(bytes_, "general.alignment") + 4, alignment);
    expect_error(bad, "'general.alignment' must be a power of two");
  }
}

// Builds a GGUF image by hand: header, then the given metadata bytes, no tensors.
std::vector<std::byte> hand_built(uint64_t num_metadata, const std::vector<uint8_t>& metadata) {
  std::vector<std::byte> out(24);
  std::memcpy(out.data(), "GGUF", 4);
  const uint32_t version = 2;
  std::memcpy(out.data() + 4, &version, 4);
  std::memcpy(out.data() + 16, &num_metadata, 8);
  for (const uint8_t b : metadata) out.push_back(static_cast<std::byte>(b));
  return out;
}

void append_u32(std::vector<uint8_t>& v, uint32_t x) {
  for (int i = 0; i < 4; ++i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
void append_u64(std::vector<uint8_t>& v, uint64_t x) {
  for (int i = 0; i < 8; ++i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}

TEST(GgufHandBuiltTest, EmptyFileEmptyArrayAndDeepNesting) {
  const StatusOr<GgufFile> empty = GgufFile::parse(hand_built(0, {}), "empty");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->version(), 2u);
  EXPECT_TRUE(empty->metadata().empty());
  EXPECT_TRUE(empty->tensors().empty());

  std::vector<uint8_t> kv;
  append_u64(kv, 1);
  kv.push_back('k');
  append_u32(kv, 9);  // array
  append_u32(kv, 4);  // of u32
  append_u64(kv, 0);  // empty
  const StatusOr<GgufFile> f = GgufFile::parse(hand_built(1, kv), "empty_array");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->get_int_array("k")->empty());

  std::vector<uint8_t> deep;
  append_u64(deep, 1);
  deep.push_back('k');
  append_u32(deep, 9);
  for (int i = 0; i < 40; ++i) {
    append_u32(deep, 9);
    append_u64(deep, 1);
  }
  const StatusOr<GgufFile> d = GgufFile::parse(hand_built(1, deep), "deep");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("arrays nested deeper than 16"));
}

// Random corruption of the header and metadata never crashes: each image parses or fails with
// an error naming it.
TEST_F(GgufFileTest, RandomCorruptionFailsCleanly) {
  StatusOr<GgufFile> f = GgufFile::parse(bytes_, "full");
  ASSERT_TRUE(f.ok());
  std::mt19937_64 rng(::testing::UnitTest::GetInstance()->random_seed() + 7);
  std::uniform_int_distribution<size_t> where(0, f->data_offset() - 1);
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::byte> bad = bytes_;
    const int flips = 1 + trial % 4;
    for (int i = 0; i < flips; ++i) bad[where(rng)] = static_cast<std::byte>(rng());
    const StatusOr<GgufFile> g = GgufFile::parse(bad, "corrupt.gguf");
    if (!g.ok()) {
      EXPECT_THAT(std::string(g.status().message()), StartsWith("corrupt.gguf: "));
    }
  }
}

}  // namespace
}  // namespace sieve::models::gguf
