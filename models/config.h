#pragma once
// The model's shape and numerics, from a Hugging Face config.json or GGUF metadata. Every
// supported architecture (Llama 2/3.x, Mistral, Qwen2/2.5, Qwen3, SmolLM2) is described by this
// one struct; the differences are flags (qkv bias, per-head q/k norm, explicit head_dim, tied
// embeddings) and the RoPE scaling.

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "nlohmann/json_fwd.hpp"

namespace sieve::models {

enum class Architecture { kLlama, kMistral, kQwen2, kQwen3 };

enum class RopeType { kDefault, kLinear, kDynamic, kYarn, kLlama3 };

// Hugging Face's rope_scaling / rope_parameters, with its defaults.
struct RopeScaling {
  RopeType type = RopeType::kDefault;
  double factor = 1.0;
  int original_max_position_embeddings = 0;  // 0 = max_position_embeddings
  double low_freq_factor = 1.0;              // llama3
  double high_freq_factor = 4.0;             // llama3
  double beta_fast = 32.0;                   // yarn
  double beta_slow = 1.0;                    // yarn
  double attention_factor = 0.0;             // yarn; 0 = derived from factor (and mscale)
  double mscale = 0.0;                       // yarn (DeepSeek-style), 0 = unset
  double mscale_all_dim = 0.0;               // yarn, 0 = unset
  bool truncate = true;                      // yarn: round the correction range
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // as the file names it, e.g. "LlamaForCausalLM"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double partial_rotary_factor = 1.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q, k, v projections (Qwen2)
  bool qk_norm = false;         // per-head RMSNorm of q and k before RoPE (Qwen3)
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;

  // The longest sequence served: max_position_embeddings, extended by the factor of the RoPE
  // scalings meant to stretch the context (linear, dynamic, yarn), as vLLM derives it.
  int context_length() const;
  int rotary_dim() const { return static_cast<int>(head_dim * partial_rotary_factor); }
  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
};

// Parses a config.json object. `source` (the file's path) prefixes every error, which names the
// offending field.
StatusOr<ModelConfig> parse_hf_config(const nlohmann::json& json, const std::string& source);
StatusOr<ModelConfig> load_hf_config(const std::string& path);

// Checks the shapes the model runner relies on (positive sizes, heads divisible, ...).
Status validate_config(const ModelConfig& config, const std::string& source);

// Inverse frequencies of the rotary embedding after scaling, [rotary_dim / 2], and the factor
// that multiplies cos and sin (YaRN), exactly as transformers' rope initialisation computes them.
// For dynamic NTK, `seq_len` is the length the frequencies are computed for (transformers uses
// the longest position seen plus one); it is ignored by the other types.
struct RopeFrequencies {
  std::vector<float> inv_freq;
  float attention_scaling = 1.0f;
};
RopeFrequencies compute_rope_frequencies(const ModelConfig& config, int64_t seq_len = 0);

}  // namespace sieve::models
