#include "models/gguf/gguf_model.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/gguf/quant.h"
#include "tests/models/gguf/test_util.h"

namespace sieve::models::gguf {
namespace {

using ::testing::ElementsAre;
using testing::gguf_fixture_dir;
using ::testing::HasSubstr;
using testing::make_temp_dir;
using testing::offset_after_string;
using testing::poke;
using testing::read_bytes;
using testing::read_floats;
using ::testing::StartsWith;
using testing::write_bytes;

std::vector<int64_t> shape_of(const Tensor& t) {
  std::vector<int64_t> shape;
  for (int d = 0; d < t.ndim(); ++d) shape.push_back(t.size(d));
  return shape;
}

// Every weight equals make_gguf_files.py's reference (the Hugging Face layout) bit for bit, and
// the model has exactly the reference's weights.
void expect_weights_match_reference(const GgufModel& model, const std::string& ref_dir) {
  std::ifstream manifest(ref_dir + "/manifest.txt");
  ASSERT_TRUE(manifest.good()) << ref_dir;
  std::set<std::string> names;
  std::string line;
  while (std::getline(manifest, line)) {
    std::istringstream fields(line);
    std::string name;
    fields >> name;
    std::vector<int64_t> shape;
    for (int64_t d; fields >> d;) shape.push_back(d);
    SCOPED_TRACE(name);
    names.insert(name);
    const auto it = model.tensors.find(name);
    ASSERT_NE(it, model.tensors.end());
    const Tensor& t = it->second;
    EXPECT_EQ(t.dtype(), DType::kF32);
    EXPECT_EQ(shape_of(t), shape);
    const std::vector<float> expected = read_floats(ref_dir + "/" + name + ".f32");
    ASSERT_EQ(t.numel(), static_cast<int64_t>(expected.size()));
    EXPECT_EQ(std::memcmp(t.data<float>(), expected.data(), expected.size() * 4), 0);
  }
  std::set<std::string> loaded;
  for (const auto& [name, tensor] : model.tensors) loaded.insert(name);
  EXPECT_EQ(loaded, names);
}

class GgufModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = gguf_fixture_dir();
    ASSERT_FALSE(dir_.empty());
  }
  std::string dir_;
};

TEST_F(GgufModelTest, LlamaIsUnpermutedToTheHuggingFaceLayout) {
  StatusOr<GgufModel> model = load_gguf_model(dir_ + "/llama.gguf");
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = model->config;
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.architecture_name, "LlamaForCausalLM");
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.intermediate_size, 512);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 64);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_FLOAT_EQ(static_cast<float>(c.rms_norm_eps), 1e-5f);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.partial_rotary_factor, 1.0);
  // Recovered from rope_freqs.weight (Llama 3.1-style scaling as llama.cpp's converter stores it).
  EXPECT_EQ(c.rope_scaling.type, RopeType::kLlama3);
  EXPECT_FLOAT_EQ(static_cast<float>(c.rope_scaling.factor), 8.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 1024);
  EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(2, 5));
  EXPECT_EQ(model->tensors.count("lm_head.weight"), 0u);
  EXPECT_NE(model->file, nullptr);
  expect_weights_match_reference(*model, dir_ + "/llama.ref");

  const VocabData& v = model->vocab;
  EXPECT_EQ(v.model, "gpt2");
  EXPECT_EQ(v.pre, "smollm");
  ASSERT_EQ(v.tokens.size(), 64u);
  EXPECT_EQ(v.tokens[3], "tok0");
  EXPECT_EQ(v.token_types.size(), 64u);
  EXPECT_EQ(v.token_types[0], 2);
  EXPECT_TRUE(v.scores.empty());
  EXPECT_THAT(v.merges, ElementsAre("t o", "to k", "tok 1"));
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.eot_id, 5);
  EXPECT_EQ(v.unknown_id, 0);
  EXPECT_EQ(v.padding_id, 2);
  EXPECT_FALSE(v.add_bos);
  EXPECT_FALSE(v.add_eos);
  EXPECT_FALSE(v.add_space_prefix);
  EXPECT_EQ(v.chat_template, "{% for m in messages %}{{ m.content }}{% endfor %}");
}

// keep_blocks: matrices in a block format the CPU multiplies stay in it (permuted Q/K rows moved
// as whole rows of blocks) and dequantize to exactly the f32 load; everything else is unchanged.
TEST_F(GgufModelTest, KeptBlocksDequantizeToTheF32Weights) {
  StatusOr<GgufModel> f32 = load_gguf_model(dir_ + "/llama.gguf");
  StatusOr<GgufModel> blocks = load_gguf_model(dir_ + "/llama.gguf", /*keep_blocks=*/true);
  ASSERT_TRUE(f32.ok() && blocks.ok());
  ASSERT_EQ(f32->tensors.size(), blocks->tensors.size());
  std::set<DType> kept;
  for (const auto& [name, want] : f32->tensors) {
    SCOPED_TRACE(name);
    const Tensor& got = blocks->tensors.at(name);
    ASSERT_EQ(shape_of(got), shape_of(want));
    std::vector<float> values(static_cast<size_t>(got.numel()));
    if (!is_block_dtype(got.dtype())) {
      ASSERT_EQ(got.dtype(), DType::kF32);
      std::memcpy(values.data(), got.data<float>(), got.nbytes());
    } else {
      kept.insert(got.dtype());
      GgmlType type = GgmlType::kF32;
      for (const GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ4_K,
                               GgmlType::kQ5_K, GgmlType::kQ6_K}) {
        if (block_dtype(t) == got.dtype()) type = t;
      }
      ASSERT_TRUE(dequantize(type, got.data<std::byte>(), got.numel(), values.data()).ok());
    }
    EXPECT_EQ(0, std::memcmp(values.data(), want.data<float>(), want.nbytes()));
  }
  // The fixture has each kept format, Q8_0 among the permuted Q/K of layer 1.
  EXPECT_EQ(kept, (std::set<DType>{DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ4_K,
                                   DType::kQ5_K, DType::kQ6_K}));
  EXPECT_EQ(blocks->tensors.at("model.layers.1.self_attn.q_proj.weight").dtype(), DType::kQ8_0);
  // Q5_1 has no kernels: dequantized.
  EXPECT_EQ(blocks->tensors.at("model.layers.0.mlp.up_proj.weight").dtype(), DType::kF32);
}

TEST_F(GgufModelTest, Qwen2HasBiasesUntiedHeadAndYarn) {
  StatusOr<GgufModel> model = load_gguf_model(dir_ + "/qwen2.gguf");
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = model->config;
  EXPECT_EQ(c.architecture, Architecture::kQwen2);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_theta, 1000000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeType::kYarn);
  EXPECT_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 1024);
  EXPECT_EQ(model->tensors.count("lm_head.weight"), 1u);
  EXPECT_EQ(model->tensors.count("model.layers.1.self_attn.k_proj.bias"), 1u);
  expect_weights_match_reference(*model, dir_ + "/qwen2.ref");

  const VocabData& v = model->vocab;  // a SentencePiece vocabulary with llama.cpp's defaults
  EXPECT_EQ(v.model, "llama");
  ASSERT_EQ(v.scores.size(), 64u);
  EXPECT_EQ(v.scores[5], -5.0f);
  EXPECT_TRUE(v.merges.empty());
  EXPECT_TRUE(v.add_bos);
  EXPECT_TRUE(v.add_space_prefix);
}

TEST_F(GgufModelTest, Qwen3HasQkNorm) {
  StatusOr<GgufModel> model = load_gguf_model(dir_ + "/qwen3.gguf");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->config.architecture, Architecture::kQwen3);
  EXPECT_EQ(model->config.architecture_name, "Qwen3ForCausalLM");
  EXPECT_TRUE(model->config.qk_norm);
  EXPECT_FALSE(model->config.attention_bias);
  EXPECT_EQ(model->config.head_dim, 64);
  EXPECT_EQ(model->tensors.count("model.layers.0.self_attn.q_norm.weight"), 1u);
  expect_weights_match_reference(*model, dir_ + "/qwen3.ref");
}

TEST(UnpermuteTest, AdjacentPairsBecomeHalves) {
  // Two heads of head_dim 4, one column: GGUF row 2*i + j holds HF row j*2 + i of its head.
  std::vector<float> rows = {0, 1, 2, 3, 4, 5, 6, 7};
  unpermute_qk_rows(rows.data(), 2, 4, 1);
  EXPECT_THAT(rows, ElementsAre(0, 2, 1, 3, 4, 6, 5, 7));
  // Rows move whole.
  std::vector<float> wide = {0, 10, 1, 11, 2, 12, 3, 13};
  unpermute_qk_rows(wide.data(), 1, 4, 2);
  EXPECT_THAT(wide, ElementsAre(0, 10, 2, 12, 1, 11, 3, 13));
}

void expect_load_error(const std::string& path, const std::string& problem) {
  const StatusOr<GgufModel> model = load_gguf_model(path);
  ASSERT_FALSE(model.ok()) << problem;
  EXPECT_THAT(std::string(model.status().message()), StartsWith(path + ": "));
  EXPECT_THAT(std::string(model.status().message()), HasSubstr(problem));
}

TEST_F(GgufModelTest, BadModelsNameTheFileAndTheProblem) {
  expect_load_error(dir_ + "/missing_tensor.gguf",
                    "missing tensor 'blk.1.ffn_up.weight' (model.layers.1.mlp.up_proj.weight)");
  expect_load_error(dir_ + "/gpt2.gguf",
                    "unsupported architecture 'gpt2' (supported: llama, mistral, qwen2, qwen3)");

  const std::string bad_dir = make_temp_dir("bad_models");
  const std::vector<std::byte> llama = read_bytes(dir_ + "/llama.gguf");
  std::vector<std::byte> bad = llama;  // ffn_norm [256] -> [128]
  poke<uint64_t>(bad, offset_after_string(llama, "blk.0.ffn_norm.weight", true) + 4, 128);
  write_bytes(bad_dir + "/shape.gguf", bad);
  expect_load_error(bad_dir + "/shape.gguf",
                    "tensor 'blk.0.ffn_norm.weight' has shape [128] (HF order), expected [256]");

  bad = llama;  // attn_norm F32 -> I32 (same size, no dequantization)
  poke<uint32_t>(bad, offset_after_string(llama, "blk.0.attn_norm.weight", true) + 4 + 8, 26);
  write_bytes(bad_dir + "/type.gguf", bad);
  expect_load_error(bad_dir + "/type.gguf",
                    "tensor 'blk.0.attn_norm.weight' has type I32, which Sieve cannot dequantize");

  bad = llama;
  poke<uint32_t>(bad, offset_after_string(llama, "llama.attention.head_count") + 4, 3);
  write_bytes(bad_dir + "/heads.gguf", bad);
  expect_load_error(bad_dir + "/heads.gguf", "head_count 3 is not a multiple of head_count_kv 2");

  bad = llama;  // the key is absent: rename it
  bad[offset_after_string(llama, "llama.block_count") - 1] = std::byte{'X'};
  write_bytes(bad_dir + "/no_layers.gguf", bad);
  expect_load_error(bad_dir + "/no_layers.gguf", "metadata 'llama.block_count' is missing");

  {  // a rope_freqs.weight that no Llama 3 scaling produces
    const StatusOr<GgufFile> parsed = GgufFile::parse(llama, "llama");
    ASSERT_TRUE(parsed.ok());
    const TensorInfo* freqs = parsed->find_tensor("rope_freqs.weight");
    ASSERT_NE(freqs, nullptr);
    bad = llama;
    poke<float>(bad, static_cast<size_t>(freqs->data - llama.data()), 2.0f);
    write_bytes(bad_dir + "/rope.gguf", bad);
    expect_load_error(bad_dir + "/rope.gguf", "'rope_freqs.weight' is not Llama 3 RoPE scaling");
  }

  bad = llama;  // more layers than the tensors could hold: rejected before listing them
  poke<uint32_t>(bad, offset_after_string(llama, "llama.block_count") + 4, 2000000000);
  write_bytes(bad_dir + "/layers.gguf", bad);
  expect_load_error(bad_dir + "/layers.gguf", "block_count 2000000000 is more than");

  const std::vector<std::byte> qwen3 = read_bytes(dir_ + "/qwen3.gguf");
  bad = qwen3;  // num_heads * head_dim must fit in int
  poke<uint32_t>(bad, offset_after_string(qwen3, "qwen3.attention.head_count") + 4, 1 << 20);
  poke<uint32_t>(bad, offset_after_string(qwen3, "qwen3.attention.key_length") + 4, 1 << 20);
  write_bytes(bad_dir + "/qdim.gguf", bad);
  expect_load_error(bad_dir + "/qdim.gguf", "head_count times the head size overflows");

  bad = llama;
  poke<uint32_t>(bad, offset_after_string(llama, "tokenizer.ggml.eos_token_id") + 4, 64);
  write_bytes(bad_dir + "/eos.gguf", bad);
  expect_load_error(bad_dir + "/eos.gguf", "'tokenizer.ggml.eos_token_id' is 64, not a token id");
}

// The embedded default model (docs/design.md, "Default model"), when it has been downloaded.
TEST(GgufRealModelTest, SmolLM2) {
  const char* home = std::getenv("HOME");
  const std::string path =
      std::string(home ? home : "") + "/.cache/sieve/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent";
  StatusOr<GgufModel> model = load_gguf_model(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = model->config;
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(model->vocab.tokens.size(), 49152u);
  EXPECT_EQ(model->vocab.tokens[2], "<|im_end|>");
  EXPECT_EQ(model->vocab.merges.size(), 48900u);
  EXPECT_FALSE(model->vocab.chat_template.empty());
  EXPECT_EQ(model->tensors.size(), 2u + 30u * 9u);
  EXPECT_EQ(model->tensors.count("lm_head.weight"), 0u);
  EXPECT_EQ(shape_of(model->tensors.at("model.embed_tokens.weight")),
            (std::vector<int64_t>{49152, 576}));
  EXPECT_EQ(shape_of(model->tensors.at("model.layers.29.self_attn.k_proj.weight")),
            (std::vector<int64_t>{192, 576}));
  for (const auto& [name, tensor] : model->tensors) {
    const float* data = tensor.data<float>();
    double sum_squares = 0;
    bool finite = true;
    for (int64_t i = 0; i < tensor.numel(); ++i) {
      finite = finite && std::isfinite(data[i]);
      sum_squares += static_cast<double>(data[i]) * data[i];
    }
    EXPECT_TRUE(finite) << name;
    EXPECT_GT(sum_squares, 0.0) << name;
  }
}

}  // namespace
}  // namespace sieve::models::gguf
