#include "models/config.h"

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"

namespace sieve::models {
namespace {

using nlohmann::json;

json llama_config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "vocab_size": 128, "hidden_size": 64,
    "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "tie_word_embeddings": true, "eos_token_id": [7, 9],
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64}})");
}

TEST(Config, ParsesTheOlderRopeKeys) {
  auto c = parse_hf_config(llama_config(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kLlama);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{7, 9}));
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLlama3);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 64);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
}

TEST(Config, ParsesTheNewerRopeParametersObject) {
  json j = llama_config();
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1000.0}, {"factor", 4.0},
                          {"original_max_position_embeddings", 64}};
  auto c = parse_hf_config(j, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeType::kYarn);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1000.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 4.0);
}

TEST(Config, QwenFlagsComeFromTheArchitecture) {
  json j = llama_config();
  j["architectures"] = {"Qwen2ForCausalLM"};
  EXPECT_TRUE(parse_hf_config(j, "c")->attention_bias);
  j["architectures"] = {"Qwen3ForCausalLM"};
  j["head_dim"] = 48;
  auto c = parse_hf_config(j, "c");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qk_norm);
  EXPECT_EQ(c->head_dim, 48);
  EXPECT_EQ(c->q_dim(), 192);
}

TEST(Config, NullHeadDimMeansDerived) {
  json j = llama_config();
  j["head_dim"] = nullptr;
  EXPECT_EQ(parse_hf_config(j, "c")->head_dim, 16);
}

void expect_error(const json& j, const std::string& substring) {
  auto c = parse_hf_config(j, "dir/config.json");
  ASSERT_FALSE(c.ok()) << "expected an error mentioning " << substring;
  EXPECT_NE(c.status().message().find("dir/config.json"), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find(substring), std::string::npos) << c.status();
}

TEST(Config, BadConfigsNameTheProblem) {
  json j = llama_config();
  j["architectures"] = {"GPT2LMHeadModel"};
  expect_error(j, "unsupported architecture 'GPT2LMHeadModel'");
  j = llama_config();
  j["hidden_size"] = "64";
  expect_error(j, "'hidden_size' has the wrong type");
  j = llama_config();
  j.erase("vocab_size");
  expect_error(j, "missing required field 'vocab_size'");
  j = llama_config();
  j["num_key_value_heads"] = 3;
  expect_error(j, "num_key_value_heads must divide");
  j = llama_config();
  j["rope_scaling"]["rope_type"] = "longrope";
  expect_error(j, "unsupported rope_type 'longrope'");
  j = llama_config();
  j["tie_word_embeddings"] = 1;
  expect_error(j, "'tie_word_embeddings' has the wrong type");
  j = llama_config();
  j["num_hidden_layers"] = -2;
  expect_error(j, "num_hidden_layers out of range");
  expect_error(json::array(), "not a JSON object");
}

TEST(RopeFrequencies, DefaultAndLinearFollowTheirFormulas) {
  auto c = *parse_hf_config(llama_config(), "c");
  c.rope_scaling = {};
  c.rope_theta = 10000;
  RopeFrequencies f = compute_rope_frequencies(c);
  ASSERT_EQ(f.inv_freq.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(f.inv_freq[i], std::pow(10000.0, -2.0 * i / 16), 1e-7);
  c.rope_scaling.type = RopeType::kLinear;
  c.rope_scaling.factor = 4;
  RopeFrequencies linear = compute_rope_frequencies(c);
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(linear.inv_freq[i], f.inv_freq[i] / 4);
}

TEST(RopeFrequencies, Llama3KeepsHighFrequenciesAndScalesLowOnes) {
  auto c = *parse_hf_config(llama_config(), "c");
  RopeFrequencies scaled = compute_rope_frequencies(c);
  c.rope_scaling = {};
  RopeFrequencies plain = compute_rope_frequencies(c);
  // Wavelengths shorter than 64/4 keep their frequency; longer than 64/1 are divided by 8.
  for (size_t i = 0; i < plain.inv_freq.size(); ++i) {
    const double wavelen = 2 * M_PI / plain.inv_freq[i];
    if (wavelen < 16) {
      EXPECT_FLOAT_EQ(scaled.inv_freq[i], plain.inv_freq[i]);
    }
    if (wavelen > 64) {
      EXPECT_FLOAT_EQ(scaled.inv_freq[i], plain.inv_freq[i] / 8);
    }
  }
}

}  // namespace
}  // namespace sieve::models
