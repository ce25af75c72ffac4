#include "models/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "kernels/cpu/cpu_backend.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"

namespace sieve::models {
namespace {

namespace fs = std::filesystem;

// Builds a safetensors image: header JSON (as given) plus `data`.
std::string image(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

StatusOr<TensorMap> parse(const std::string& bytes) {
  auto owner = std::make_shared<std::string>(bytes);
  return parse_safetensors(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(owner->data()), owner->size()),
      "test.safetensors", owner);
}

std::string floats(std::initializer_list<float> values) {
  std::string s(values.size() * 4, '\0');
  std::memcpy(s.data(), values.begin(), s.size());
  return s;
}

TEST(Safetensors, ReadsF32F16AndBf16Tensors) {
  const uint16_t half[2] = {0x3c00, 0xc000};    // 1, -2
  const uint16_t bf16[2] = {0x3f80, 0x4040};    // 1, 3
  std::string data = floats({1.5f, -2.25f});
  data.append(reinterpret_cast<const char*>(half), 4);
  data.append(reinterpret_cast<const char*>(bf16), 4);
  auto map = parse(image(R"({"__metadata__": {"format": "pt"},
      "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F16", "shape": [1, 2], "data_offsets": [8, 12]},
      "c": {"dtype": "BF16", "shape": [2], "data_offsets": [12, 16]}})", data));
  ASSERT_TRUE(map.ok()) << map.status();
  ASSERT_EQ(map->size(), 3u);
  // The header's length leaves the data unaligned here: the loader hands out aligned memory.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(map->at("a").data<float>()) % alignof(float), 0u);
  EXPECT_EQ(map->at("a").data<float>()[1], -2.25f);
  EXPECT_EQ(map->at("b").dtype(), DType::kF16);
  EXPECT_EQ(f16_to_f32(map->at("b").data<uint16_t>()[1]), -2.0f);
  EXPECT_EQ(bf16_to_f32(map->at("c").data<uint16_t>()[1]), 3.0f);
}

void expect_error(const std::string& bytes, const std::string& substring) {
  auto map = parse(bytes);
  ASSERT_FALSE(map.ok()) << "expected: " << substring;
  const std::string message(map.status().message());
  EXPECT_NE(message.find("test.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find(substring), std::string::npos) << message;
}

TEST(Safetensors, BadFilesNameTheProblem) {
  const std::string good_header = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  const std::string good = image(good_header, floats({1, 2}));
  expect_error("abc", "shorter than its 8-byte header");
  expect_error(good.substr(0, 20), "exceeds the file");
  expect_error(image("{not json", ""), "malformed JSON header");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}})", floats({1, 2})),
               "lie outside");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", floats({1, 2})),
               "need 12");
  expect_error(image(R"({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})", "ab"),
               "unsupported dtype 'F8_E4M3'");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}})", floats({1, 2})),
               "negative size");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [2]}})", floats({1, 2})), "data_offsets");
  // Every truncation of a valid file is an error, never a crash.
  for (size_t n = 0; n + 1 < good.size(); ++n) EXPECT_FALSE(parse(good.substr(0, n)).ok()) << n;
}

TEST(Safetensors, MissingTensorsAndWrongShapesNameTheTensor) {
  auto config = parse_hf_config(nlohmann::json::parse(R"({"architectures": ["LlamaForCausalLM"],
      "vocab_size": 4, "hidden_size": 2, "intermediate_size": 2, "num_hidden_layers": 1,
      "num_attention_heads": 1})"), "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  auto map = parse(image(R"({"model.embed_tokens.weight": {"dtype": "F32", "shape": [4, 2], "data_offsets": [0, 32]},
      "model.norm.weight": {"dtype": "F32", "shape": [3], "data_offsets": [32, 44]}})",
                         std::string(44, '\0')));
  ASSERT_TRUE(map.ok()) << map.status();
  auto backend = kernels::cpu::make_cpu_backend();
  auto weights = build_weights(*config, *map, *backend, "model/");
  ASSERT_FALSE(weights.ok());
  EXPECT_NE(weights.status().message().find("'model.norm.weight' has shape [3], expected [2]"),
            std::string::npos)
      << weights.status();
  map->erase("model.norm.weight");
  weights = build_weights(*config, *map, *backend, "model/");
  EXPECT_NE(weights.status().message().find("missing tensor 'model.norm.weight'"), std::string::npos)
      << weights.status();
}

TEST(Safetensors, ShardedDirectoriesLoadEveryShard) {
  const fs::path dir = fs::temp_directory_path() / ("sieve_shards_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "a.safetensors", std::ios::binary)
      << image(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", floats({5}));
  std::ofstream(dir / "b.safetensors", std::ios::binary)
      << image(R"({"y": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", floats({6}));
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"weight_map": {"x": "a.safetensors", "y": "b.safetensors"}})";
  auto map = load_safetensors_dir(dir.string());
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->at("x").data<float>()[0], 5.0f);
  EXPECT_EQ(map->at("y").data<float>()[0], 6.0f);
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"weight_map": {"x": "../../etc/passwd"}})";
  EXPECT_FALSE(load_safetensors_dir(dir.string()).ok());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sieve::models
