#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "models/json_file.h"
#include "nlohmann/json.hpp"

namespace sieve::models {
namespace {

using nlohmann::json;

// Reads optional field `key` of `obj` into `out`; a present field of the wrong type is an error
// naming it. JSON null counts as absent (transformers writes `"head_dim": null`).
template <typename T>
Status read_field(const json& obj, const char* key, const std::string& source, T& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return OkStatus();
  bool type_ok = false;
  if constexpr (std::is_same_v<T, bool>) {
    type_ok = it->is_boolean();
  } else if constexpr (std::is_integral_v<T>) {
    type_ok = it->is_number_integer();
  } else if constexpr (std::is_floating_point_v<T>) {
    type_ok = it->is_number();
  } else {
    type_ok = it->is_string();
  }
  if (!type_ok) {
    return InvalidArgumentError(source + ": field '" + key + "' has the wrong type (" +
                                std::string(it->type_name()) + ")");
  }
  out = it->get<T>();
  return OkStatus();
}

template <typename T>
Status require_field(const json& obj, const char* key, const std::string& source, T& out) {
  if (!obj.contains(key) || obj[key].is_null()) {
    return InvalidArgumentError(source + ": missing required field '" + key + "'");
  }
  return read_field(obj, key, source, out);
}

StatusOr<Architecture> parse_architecture(const json& obj, const std::string& source,
                                          std::string& name) {
  std::string model_type;
  RETURN_IF_ERROR(read_field(obj, "model_type", source, model_type));
  auto it = obj.find("architectures");
  if (it != obj.end() && !it->is_null()) {
    if (!it->is_array() || it->empty() || !(*it)[0].is_string()) {
      return InvalidArgumentError(source + ": field 'architectures' must be a list of strings");
    }
    name = (*it)[0].get<std::string>();
  } else {
    name = model_type;
  }
  if (name == "LlamaForCausalLM" || name == "llama") return Architecture::kLlama;
  if (name == "MistralForCausalLM" || name == "mistral") return Architecture::kMistral;
  if (name == "Qwen2ForCausalLM" || name == "qwen2") return Architecture::kQwen2;
  if (name == "Qwen3ForCausalLM" || name == "qwen3") return Architecture::kQwen3;
  return InvalidArgumentError(source + ": unsupported architecture '" + name +
                              "' (supported: LlamaForCausalLM, MistralForCausalLM, "
                              "Qwen2ForCausalLM, Qwen3ForCausalLM)");
}

// Both the older `rope_scaling` object and the newer `rope_parameters` one (which also carries
// rope_theta) use the same keys for the scaling itself.
Status parse_rope(const json& rope, const std::string& source, ModelConfig& config) {
  if (!rope.is_object()) {
    return InvalidArgumentError(source + ": rope scaling must be an object");
  }
  const std::string where = source + ": rope scaling";
  std::string type = "default";
  RETURN_IF_ERROR(read_field(rope, "type", where, type));
  RETURN_IF_ERROR(read_field(rope, "rope_type", where, type));
  RopeScaling& s = config.rope_scaling;
  if (type == "default") {
    s.type = RopeType::kDefault;
  } else if (type == "linear") {
    s.type = RopeType::kLinear;
  } else if (type == "dynamic") {
    s.type = RopeType::kDynamic;
  } else if (type == "yarn") {
    s.type = RopeType::kYarn;
  } else if (type == "llama3") {
    s.type = RopeType::kLlama3;
  } else {
    return InvalidArgumentError(where + ": unsupported rope_type '" + type + "'");
  }
  RETURN_IF_ERROR(read_field(rope, "rope_theta", where, config.rope_theta));
  RETURN_IF_ERROR(read_field(rope, "partial_rotary_factor", where, config.partial_rotary_factor));
  RETURN_IF_ERROR(read_field(rope, "factor", where, s.factor));
  RETURN_IF_ERROR(read_field(rope, "original_max_position_embeddings", where,
                             s.original_max_position_embeddings));
  RETURN_IF_ERROR(read_field(rope, "low_freq_factor", where, s.low_freq_factor));
  RETURN_IF_ERROR(read_field(rope, "high_freq_factor", where, s.high_freq_factor));
  RETURN_IF_ERROR(read_field(rope, "beta_fast", where, s.beta_fast));
  RETURN_IF_ERROR(read_field(rope, "beta_slow", where, s.beta_slow));
  RETURN_IF_ERROR(read_field(rope, "attention_factor", where, s.attention_factor));
  RETURN_IF_ERROR(read_field(rope, "mscale", where, s.mscale));
  RETURN_IF_ERROR(read_field(rope, "mscale_all_dim", where, s.mscale_all_dim));
  RETURN_IF_ERROR(read_field(rope, "truncate", where, s.truncate));
  if (s.type != RopeType::kDefault && !(s.factor > 0)) {
    return InvalidArgumentError(where + ": 'factor' must be positive");
  }
  return OkStatus();
}

Status parse_eos(const json& obj, const std::string& source, ModelConfig& config) {
  auto it = obj.find("eos_token_id");
  if (it == obj.end() || it->is_null()) return OkStatus();
  if (it->is_number_integer()) {
    config.eos_token_ids.push_back(it->get<int>());
    return OkStatus();
  }
  if (it->is_array()) {
    for (const json& id : *it) {
      if (!id.is_number_integer()) {
        return InvalidArgumentError(source + ": field 'eos_token_id' must hold integers");
      }
      config.eos_token_ids.push_back(id.get<int>());
    }
    return OkStatus();
  }
  return InvalidArgumentError(source + ": field 'eos_token_id' has the wrong type");
}

}  // namespace

StatusOr<ModelConfig> parse_hf_config(const json& obj, const std::string& source) {
  if (!obj.is_object()) return InvalidArgumentError(source + ": config is not a JSON object");
  ModelConfig c;
  ASSIGN_OR_RETURN(c.architecture, parse_architecture(obj, source, c.architecture_name));
  RETURN_IF_ERROR(require_field(obj, "vocab_size", source, c.vocab_size));
  RETURN_IF_ERROR(require_field(obj, "hidden_size", source, c.hidden_size));
  RETURN_IF_ERROR(require_field(obj, "intermediate_size", source, c.intermediate_size));
  RETURN_IF_ERROR(require_field(obj, "num_hidden_layers", source, c.num_layers));
  RETURN_IF_ERROR(require_field(obj, "num_attention_heads", source, c.num_heads));
  c.num_kv_heads = c.num_heads;
  RETURN_IF_ERROR(read_field(obj, "num_key_value_heads", source, c.num_kv_heads));
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  RETURN_IF_ERROR(read_field(obj, "head_dim", source, c.head_dim));
  RETURN_IF_ERROR(read_field(obj, "max_position_embeddings", source, c.max_position_embeddings));
  RETURN_IF_ERROR(read_field(obj, "rms_norm_eps", source, c.rms_norm_eps));
  RETURN_IF_ERROR(read_field(obj, "rope_theta", source, c.rope_theta));
  RETURN_IF_ERROR(read_field(obj, "partial_rotary_factor", source, c.partial_rotary_factor));
  RETURN_IF_ERROR(read_field(obj, "tie_word_embeddings", source, c.tie_word_embeddings));
  RETURN_IF_ERROR(read_field(obj, "attention_bias", source, c.attention_bias));
  RETURN_IF_ERROR(read_field(obj, "bos_token_id", source, c.bos_token_id));
  RETURN_IF_ERROR(parse_eos(obj, source, c));
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    auto it = obj.find(key);
    if (it != obj.end() && !it->is_null()) RETURN_IF_ERROR(parse_rope(*it, source, c));
  }
  // Qwen2 always has q/k/v biases (its config does not say so); Qwen3 has per-head q/k norms.
  if (c.architecture == Architecture::kQwen2) c.attention_bias = true;
  if (c.architecture == Architecture::kQwen3) c.qk_norm = true;
  if (c.max_position_embeddings <= 0) c.max_position_embeddings = 2048;
  RETURN_IF_ERROR(validate_config(c, source));
  return c;
}

StatusOr<ModelConfig> load_hf_config(const std::string& path) {
  ASSIGN_OR_RETURN(const json obj, read_json_file(path));
  return parse_hf_config(obj, path);
}

Status validate_config(const ModelConfig& c, const std::string& source) {
  auto bad = [&](const std::string& what) {
    return InvalidArgumentError(source + ": invalid config: " + what);
  };
  constexpr int kMaxDim = 1 << 20;
  if (c.vocab_size <= 0 || c.vocab_size > (1 << 24)) return bad("vocab_size out of range");
  if (c.hidden_size <= 0 || c.hidden_size > kMaxDim) return bad("hidden_size out of range");
  if (c.intermediate_size <= 0 || c.intermediate_size > kMaxDim) {
    return bad("intermediate_size out of range");
  }
  if (c.num_layers <= 0 || c.num_layers > 1024) return bad("num_hidden_layers out of range");
  if (c.num_heads <= 0 || c.num_heads > 4096) return bad("num_attention_heads out of range");
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0) {
    return bad("num_key_value_heads must divide num_attention_heads");
  }
  if (c.head_dim <= 0 || c.head_dim > 1024 || c.head_dim % 2 != 0) {
    return bad("head_dim must be a positive even number up to 1024");
  }
  if (!(c.partial_rotary_factor > 0 && c.partial_rotary_factor <= 1) || c.rotary_dim() % 2 != 0) {
    return bad("partial_rotary_factor must give an even rotary dimension");
  }
  if (!(c.rms_norm_eps > 0)) return bad("rms_norm_eps must be positive");
  if (!(c.rope_theta > 0)) return bad("rope_theta must be positive");
  if (c.max_position_embeddings <= 0) return bad("max_position_embeddings must be positive");
  return OkStatus();
}

int ModelConfig::context_length() const {
  const RopeScaling& s = rope_scaling;
  if (s.type == RopeType::kLinear || s.type == RopeType::kDynamic || s.type == RopeType::kYarn) {
    const int base = s.original_max_position_embeddings > 0 ? s.original_max_position_embeddings
                                                            : max_position_embeddings;
    return std::max(max_position_embeddings, static_cast<int>(base * s.factor));
  }
  return max_position_embeddings;
}

RopeFrequencies compute_rope_frequencies(const ModelConfig& c, int64_t seq_len) {
  // Mirrors transformers' modeling_rope_utils, in float32 where it computes in float32.
  const int dim = c.rotary_dim();
  const RopeScaling& s = c.rope_scaling;
  double base = c.rope_theta;
  RopeFrequencies out;
  if (s.type == RopeType::kDynamic) {
    // transformers takes max_position_embeddings as the original length here.
    const double max_pos = c.max_position_embeddings;
    const double len = std::max<double>(static_cast<double>(seq_len), max_pos);
    base = base * std::pow((s.factor * len / max_pos) - (s.factor - 1), dim / (dim - 2.0));
  }
  std::vector<float> pos_freqs(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    pos_freqs[i] = std::pow(static_cast<float>(base), static_cast<float>(2 * i) / dim);
  }
  out.inv_freq.resize(dim / 2);
  for (int i = 0; i < dim / 2; ++i) out.inv_freq[i] = 1.0f / pos_freqs[i];

  switch (s.type) {
    case RopeType::kDefault:
    case RopeType::kDynamic:
      break;
    case RopeType::kLinear:
      for (float& f : out.inv_freq) f /= static_cast<float>(s.factor);
      break;
    case RopeType::kLlama3: {
      const double old_len = s.original_max_position_embeddings > 0
                                 ? s.original_max_position_embeddings
                                 : c.max_position_embeddings;
      const double low_wavelen = old_len / s.low_freq_factor;
      const double high_wavelen = old_len / s.high_freq_factor;
      for (float& f : out.inv_freq) {
        const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
        float scaled = wavelen > low_wavelen ? f / static_cast<float>(s.factor) : f;
        if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
          const float smooth = static_cast<float>((old_len / wavelen - s.low_freq_factor) /
                                                  (s.high_freq_factor - s.low_freq_factor));
          scaled = (1 - smooth) * scaled / static_cast<float>(s.factor) + smooth * scaled;
        }
        f = scaled;
      }
      break;
    }
    case RopeType::kYarn: {
      // transformers 5 uses the configured factor (checked by the llama_yarn golden fixture,
      // whose max_position_embeddings / original ratio differs from its factor).
      const double factor = s.factor;
      const double original = s.original_max_position_embeddings > 0
                                  ? s.original_max_position_embeddings
                                  : c.max_position_embeddings;
      auto get_mscale = [](double scale, double mscale) {
        return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
      };
      double attention_factor = s.attention_factor;
      if (attention_factor <= 0) {
        attention_factor = (s.mscale > 0 && s.mscale_all_dim > 0)
                               ? get_mscale(factor, s.mscale) / get_mscale(factor, s.mscale_all_dim)
                               : get_mscale(factor, 1.0);
      }
      auto correction_dim = [&](double rotations) {
        return (dim * std::log(original / (rotations * 2 * std::numbers::pi))) /
               (2 * std::log(base));
      };
      double low = correction_dim(s.beta_fast);
      double high = correction_dim(s.beta_slow);
      if (s.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, dim - 1.0);
      if (low == high) high += 0.001;
      for (int i = 0; i < dim / 2; ++i) {
        const float ramp = std::clamp(
            static_cast<float>((static_cast<float>(i) - low) / (high - low)), 0.0f, 1.0f);
        const float extrapolation_factor = 1.0f - ramp;
        const float extrapolation = 1.0f / pos_freqs[i];
        const float interpolation = 1.0f / (static_cast<float>(factor) * pos_freqs[i]);
        out.inv_freq[i] = interpolation * (1 - extrapolation_factor) +
                          extrapolation * extrapolation_factor;
      }
      out.attention_scaling = static_cast<float>(attention_factor);
      break;
    }
  }
  return out;
}

}  // namespace sieve::models
