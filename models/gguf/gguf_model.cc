#include "models/gguf/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <optional>
#include <utility>
#include <vector>

#include "core/check.h"
#include "models/gguf/quant.h"

namespace sieve::models::gguf {
namespace {

Status file_error(const GgufFile& file, const std::string& problem) {
  return InvalidArgumentError(file.path() + ": " + problem);
}

// A required (or, with a default, optional) metadata integer in [1, 2^31).
StatusOr<int> positive_int(const GgufFile& file, const std::string& key,
                           std::optional<int> fallback = std::nullopt) {
  if (!file.has(key) && fallback) return *fallback;
  ASSIGN_OR_RETURN(const int64_t value, file.get_int(key));
  if (value <= 0 || value > std::numeric_limits<int>::max()) {
    return file_error(file, "metadata '" + key + "' is " + std::to_string(value) +
                                ", expected a positive integer below 2^31");
  }
  return static_cast<int>(value);
}

StatusOr<double> number_or(const GgufFile& file, const std::string& key, double fallback) {
  if (!file.has(key)) return fallback;
  return file.get_double(key);
}

// An optional token id; -1 when absent.
StatusOr<int32_t> token_id(const GgufFile& file, const std::string& key, size_t num_tokens) {
  if (!file.has(key)) return -1;
  ASSIGN_OR_RETURN(const int64_t id, file.get_int(key));
  if (id < 0 || static_cast<uint64_t>(id) >= num_tokens) {
    return file_error(file, "metadata '" + key + "' is " + std::to_string(id) +
                                ", not a token id (the vocabulary has " +
                                std::to_string(num_tokens) + " tokens)");
  }
  return static_cast<int32_t>(id);
}

StatusOr<bool> bool_or(const GgufFile& file, const std::string& key, bool fallback) {
  if (!file.has(key)) return fallback;
  return file.get_bool(key);
}

Status read_rope_scaling(const GgufFile& file, const std::string& arch, ModelConfig* config) {
  RopeScaling& rope = config->rope_scaling;
  const std::string prefix = arch + ".rope.scaling.";
  std::string type = "none";
  if (file.has(prefix + "type")) {
    ASSIGN_OR_RETURN(type, file.get_string(prefix + "type"));
  } else if (file.has(arch + ".rope.scale_linear")) {  // older files
    type = "linear";
    ASSIGN_OR_RETURN(rope.factor, file.get_double(arch + ".rope.scale_linear"));
  }
  if (type == "none") return OkStatus();
  if (type == "linear") {
    rope.type = RopeType::kLinear;
  } else if (type == "yarn") {
    rope.type = RopeType::kYarn;
    ASSIGN_OR_RETURN(rope.beta_fast, number_or(file, prefix + "yarn_beta_fast", rope.beta_fast));
    ASSIGN_OR_RETURN(rope.beta_slow, number_or(file, prefix + "yarn_beta_slow", rope.beta_slow));
  } else {
    return file_error(file, "unsupported RoPE scaling type '" + type + "' in metadata '" + prefix +
                                "type' (supported: none, linear, yarn)");
  }
  ASSIGN_OR_RETURN(rope.factor, number_or(file, prefix + "factor", rope.factor));
  if (!(rope.factor >= 1.0)) {
    return file_error(file, "metadata '" + prefix + "factor' must be at least 1");
  }
  ASSIGN_OR_RETURN(rope.original_max_position_embeddings,
                   positive_int(file, prefix + "original_context_length", 0));
  return OkStatus();
}

// llama.cpp's converter stores Llama 3 RoPE scaling as per-frequency divisors (rope_freqs.weight)
// rather than metadata. Recovers transformers' llama3 parameters from them, assuming its
// low_freq_factor 1 and high_freq_factor 4 (every Llama 3.x release), and checks that these
// reproduce every divisor. With f_i the divisor of frequency i and wavelength w_i =
// 2*pi*theta^(2i/d): f_i = 1 (w_i < L/4), factor (w_i > L), else 1 / ((1 - s) / factor + s), s = (L
// / w_i - 1) / 3.
Status read_llama3_rope(const GgufFile& file, ModelConfig* c) {
  const TensorInfo* info = file.find_tensor("rope_freqs.weight");
  if (info == nullptr) return OkStatus();
  const int64_t n = c->rotary_dim() / 2;
  if (info->type != GgmlType::kF32 || info->numel != n) {
    return file_error(file, "tensor 'rope_freqs.weight' must be F32 with " + std::to_string(n) +
                                " values (rotary_dim / 2)");
  }
  if (c->rope_scaling.type != RopeType::kDefault) {
    return file_error(file, "tensor 'rope_freqs.weight' and rope.scaling.type both scale RoPE");
  }
  std::vector<float> f(static_cast<size_t>(n));
  std::memcpy(f.data(), info->data, f.size() * sizeof(float));
  const double factor = *std::max_element(f.begin(), f.end());
  if (factor == 1.0) return OkStatus();
  constexpr double kLow = 1.0, kHigh = 4.0;
  const auto wavelen = [&](int64_t i) {
    return 2.0 * std::numbers::pi *
           std::pow(c->rope_theta, 2.0 * static_cast<double>(i) / c->rotary_dim());
  };
  // L from the smoothly scaled frequencies; without any, a length between the two regions.
  double sum = 0.0, lo = 0.0, hi = std::numeric_limits<double>::infinity();
  int64_t num_medium = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double fi = f[static_cast<size_t>(i)];
    if (fi <= 1.0) {
      lo = std::max(lo, kHigh * wavelen(i));
    } else if (fi >= factor) {
      hi = std::min(hi, wavelen(i) * kLow);
    } else {
      const double smooth = (1.0 / fi - 1.0 / factor) / (1.0 - 1.0 / factor);
      sum += wavelen(i) * (smooth * (kHigh - kLow) + kLow);
      ++num_medium;
    }
  }
  const double length = num_medium > 0                 ? sum / static_cast<double>(num_medium)
                        : (8192.0 > lo && 8192.0 < hi) ? 8192.0
                                                       : (lo + std::min(hi, 2.0 * lo + 1.0)) / 2;
  const bool fits = factor <= 1e6 && length >= 1.0 && length <= 1e9;
  const double original = fits ? std::round(length) : 0.0;
  for (int64_t i = 0; fits && i < n; ++i) {
    const double w = wavelen(i);
    const double smooth = (original / w - kLow) / (kHigh - kLow);
    const double expected = w < original / kHigh  ? 1.0
                            : w > original / kLow ? factor
                                                  : 1.0 / ((1.0 - smooth) / factor + smooth);
    if (!(std::fabs(expected - f[static_cast<size_t>(i)]) <= 1e-3 * expected)) {
      return file_error(file, "tensor 'rope_freqs.weight' is not Llama 3 RoPE scaling " +
                                  std::string("(low_freq_factor 1, high_freq_factor 4)"));
    }
  }
  if (!fits) return file_error(file, "tensor 'rope_freqs.weight' has absurd scaling factors");
  c->rope_scaling.type = RopeType::kLlama3;
  c->rope_scaling.factor = factor;
  c->rope_scaling.low_freq_factor = kLow;
  c->rope_scaling.high_freq_factor = kHigh;
  c->rope_scaling.original_max_position_embeddings = static_cast<int>(original);
  return OkStatus();
}

// One weight the architecture expects: its GGUF and HF names and HF shape.
struct WeightSpec {
  std::string gguf_name;
  std::string hf_name;
  std::vector<int64_t> shape;
  int64_t permute_heads = 0;  // > 0: undo llama.cpp's Q/K permutation over this many heads
};

std::vector<WeightSpec> weight_specs(const GgufFile& file, const ModelConfig& c) {
  const bool permuted =
      c.architecture == Architecture::kLlama || c.architecture == Architecture::kMistral;
  const int64_t hidden = c.hidden_size;
  std::vector<WeightSpec> specs;
  specs.push_back({"token_embd.weight", "model.embed_tokens.weight", {c.vocab_size, hidden}});
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const std::string blk = "blk." + std::to_string(layer) + ".";
    const std::string hf = "model.layers." + std::to_string(layer) + ".";
    const int64_t q_heads = permuted ? c.num_heads : 0;
    const int64_t k_heads = permuted ? c.num_kv_heads : 0;
    specs.push_back({blk + "attn_norm.weight", hf + "input_layernorm.weight", {hidden}});
    specs.push_back(
        {blk + "attn_q.weight", hf + "self_attn.q_proj.weight", {c.q_dim(), hidden}, q_heads});
    specs.push_back(
        {blk + "attn_k.weight", hf + "self_attn.k_proj.weight", {c.kv_dim(), hidden}, k_heads});
    specs.push_back({blk + "attn_v.weight", hf + "self_attn.v_proj.weight", {c.kv_dim(), hidden}});
    specs.push_back(
        {blk + "attn_output.weight", hf + "self_attn.o_proj.weight", {hidden, c.q_dim()}});
    if (c.attention_bias) {
      specs.push_back({blk + "attn_q.bias", hf + "self_attn.q_proj.bias", {c.q_dim()}, q_heads});
      specs.push_back({blk + "attn_k.bias", hf + "self_attn.k_proj.bias", {c.kv_dim()}, k_heads});
      specs.push_back({blk + "attn_v.bias", hf + "self_attn.v_proj.bias", {c.kv_dim()}});
    }
    if (c.qk_norm) {
      specs.push_back({blk + "attn_q_norm.weight", hf + "self_attn.q_norm.weight", {c.head_dim}});
      specs.push_back({blk + "attn_k_norm.weight", hf + "self_attn.k_norm.weight", {c.head_dim}});
    }
    specs.push_back({blk + "ffn_norm.weight", hf + "post_attention_layernorm.weight", {hidden}});
    const int64_t inter = c.intermediate_size;
    specs.push_back({blk + "ffn_gate.weight", hf + "mlp.gate_proj.weight", {inter, hidden}});
    specs.push_back({blk + "ffn_up.weight", hf + "mlp.up_proj.weight", {inter, hidden}});
    specs.push_back({blk + "ffn_down.weight", hf + "mlp.down_proj.weight", {hidden, inter}});
  }
  specs.push_back({"output_norm.weight", "model.norm.weight", {hidden}});
  if (file.find_tensor("output.weight") != nullptr) {
    specs.push_back({"output.weight", "lm_head.weight", {c.vocab_size, hidden}});
  }
  return specs;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The rows of a block-format matrix, un-permuted as unpermute_qk_rows does for f32 rows.
void unpermute_block_rows(std::byte* weight, int64_t num_heads, int64_t head_dim,
                          size_t row_bytes) {
  const int64_t half = head_dim / 2;
  std::vector<std::byte> head(static_cast<size_t>(head_dim) * row_bytes);
  for (int64_t h = 0; h < num_heads; ++h) {
    std::byte* base = weight + h * head_dim * row_bytes;
    std::copy(base, base + head.size(), head.begin());
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const std::byte* src = head.data() + (2 * i + j) * row_bytes;
        std::copy(src, src + row_bytes, base + (j * half + i) * row_bytes);
      }
    }
  }
}

StatusOr<Tensor> load_weight(const GgufFile& file, const WeightSpec& spec, bool keep_blocks) {
  const TensorInfo* info = file.find_tensor(spec.gguf_name);
  if (info == nullptr) {
    return file_error(file, "missing tensor '" + spec.gguf_name + "' (" + spec.hf_name + ")");
  }
  std::vector<int64_t> dims = info->dims;  // ggml order; trailing 1s are the same shape
  while (dims.size() > spec.shape.size() && dims.back() == 1) dims.pop_back();
  const std::vector<int64_t> shape(dims.rbegin(), dims.rend());
  if (shape != spec.shape) {
    return file_error(file, "tensor '" + spec.gguf_name + "' has shape " + shape_string(shape) +
                                " (HF order), expected " + shape_string(spec.shape));
  }
  const TypeTraits* traits = find_type_traits(static_cast<uint32_t>(info->type));
  SIEVE_CHECK(traits != nullptr) << "the parser admitted type " << static_cast<int>(info->type);
  if (traits->dequantize == nullptr) {
    return file_error(file, "tensor '" + spec.gguf_name + "' has type " +
                                std::string(traits->name) + ", which Sieve cannot dequantize");
  }
  const int64_t rows = spec.shape[0];
  const int64_t cols = spec.shape.size() > 1 ? spec.shape[1] : 1;
  const int64_t head_dim = spec.permute_heads > 0 ? rows / spec.permute_heads : 0;
  if (spec.permute_heads > 0 && (rows % spec.permute_heads != 0 || head_dim % 2 != 0)) {
    return file_error(file, "tensor '" + spec.gguf_name + "': " + std::to_string(rows) +
                                " rows do not split into " + std::to_string(spec.permute_heads) +
                                " heads of even size");
  }
  const std::optional<DType> blocks = block_dtype(info->type);
  if (keep_blocks && blocks && spec.shape.size() == 2) {
    // The parser checked that each row is whole blocks (ggml's rule for ne[0]).
    const size_t bytes = dtype_bytes(*blocks, info->numel);
    auto* data = const_cast<std::byte*>(info->data);  // only ever read
    if (spec.permute_heads == 0 && file.file() != nullptr) {
      return Tensor(TensorView(data, *blocks, spec.shape), file.file());
    }
    Tensor copy = Tensor::empty(*blocks, spec.shape);
    std::copy(data, data + bytes, copy.data<std::byte>());
    if (spec.permute_heads > 0) {
      unpermute_block_rows(copy.data<std::byte>(), spec.permute_heads, head_dim,
                           dtype_bytes(*blocks, cols));
    }
    return copy;
  }
  Tensor tensor = Tensor::empty(DType::kF32, spec.shape);
  RETURN_IF_ERROR(dequantize(info->type, info->data, info->numel, tensor.data<float>()));
  if (spec.permute_heads > 0) {
    unpermute_qk_rows(tensor.data<float>(), spec.permute_heads, head_dim, cols);
  }
  return tensor;
}

std::string hf_architecture_name(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kMistral:
      return "MistralForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    case Architecture::kQwen3:
      return "Qwen3ForCausalLM";
  }
  return "";
}

}  // namespace

void unpermute_qk_rows(float* weight, int64_t num_heads, int64_t head_dim, int64_t cols) {
  SIEVE_CHECK(head_dim % 2 == 0) << "head_dim=" << head_dim;
  const int64_t half = head_dim / 2;
  std::vector<float> head(static_cast<size_t>(head_dim * cols));
  for (int64_t h = 0; h < num_heads; ++h) {
    float* base = weight + h * head_dim * cols;
    std::copy(base, base + head_dim * cols, head.begin());
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const float* src = head.data() + (2 * i + j) * cols;
        std::copy(src, src + cols, base + (j * half + i) * cols);
      }
    }
  }
}

StatusOr<ModelConfig> read_model_config(const GgufFile& file) {
  ModelConfig c;
  ASSIGN_OR_RETURN(const std::string arch, file.get_string("general.architecture"));
  if (arch == "llama") {
    c.architecture = Architecture::kLlama;
  } else if (arch == "mistral") {
    c.architecture = Architecture::kMistral;
  } else if (arch == "qwen2") {
    c.architecture = Architecture::kQwen2;
  } else if (arch == "qwen3") {
    c.architecture = Architecture::kQwen3;
  } else {
    return file_error(
        file, "unsupported architecture '" + arch + "' (supported: llama, mistral, qwen2, qwen3)");
  }
  c.architecture_name = hf_architecture_name(c.architecture);
  ASSIGN_OR_RETURN(c.num_layers, positive_int(file, arch + ".block_count"));
  ASSIGN_OR_RETURN(c.hidden_size, positive_int(file, arch + ".embedding_length"));
  ASSIGN_OR_RETURN(c.intermediate_size, positive_int(file, arch + ".feed_forward_length"));
  ASSIGN_OR_RETURN(c.num_heads, positive_int(file, arch + ".attention.head_count"));
  ASSIGN_OR_RETURN(c.num_kv_heads,
                   positive_int(file, arch + ".attention.head_count_kv", c.num_heads));
  if (c.num_heads % c.num_kv_heads != 0) {
    return file_error(file, "attention.head_count " + std::to_string(c.num_heads) +
                                " is not a multiple of head_count_kv " +
                                std::to_string(c.num_kv_heads));
  }
  if (!file.has(arch + ".attention.key_length") && c.hidden_size % c.num_heads != 0) {
    return file_error(file, "embedding_length is not a multiple of attention.head_count");
  }
  ASSIGN_OR_RETURN(c.head_dim,
                   positive_int(file, arch + ".attention.key_length", c.hidden_size / c.num_heads));
  if (int64_t{c.num_heads} * c.head_dim > std::numeric_limits<int>::max()) {
    return file_error(file, "attention.head_count times the head size overflows");
  }
  ASSIGN_OR_RETURN(const int rotary_dim,
                   positive_int(file, arch + ".rope.dimension_count", c.head_dim));
  if (rotary_dim > c.head_dim || rotary_dim % 2 != 0) {
    return file_error(file, "rope.dimension_count " + std::to_string(rotary_dim) +
                                " must be even and at most the head size");
  }
  c.partial_rotary_factor = static_cast<double>(rotary_dim) / c.head_dim;
  ASSIGN_OR_RETURN(c.max_position_embeddings, positive_int(file, arch + ".context_length"));
  ASSIGN_OR_RETURN(c.rms_norm_eps, file.get_double(arch + ".attention.layer_norm_rms_epsilon"));
  ASSIGN_OR_RETURN(c.rope_theta, number_or(file, arch + ".rope.freq_base", 10000.0));
  if (!(c.rms_norm_eps > 0.0) || !(c.rope_theta > 0.0)) {
    return file_error(file, "layer_norm_rms_epsilon and rope.freq_base must be positive");
  }
  RETURN_IF_ERROR(read_rope_scaling(file, arch, &c));
  RETURN_IF_ERROR(read_llama3_rope(file, &c));

  int vocab_fallback = 0;
  if (const Value* tokens = file.find("tokenizer.ggml.tokens"); tokens && tokens->is_array()) {
    vocab_fallback = static_cast<int>(std::min<uint64_t>(tokens->size(), 1u << 30));
  } else if (const TensorInfo* embd = file.find_tensor("token_embd.weight");
             embd && embd->dims.size() == 2) {
    vocab_fallback = static_cast<int>(std::min<int64_t>(embd->dims[1], 1 << 30));
  }
  if (file.has(arch + ".vocab_size") || vocab_fallback == 0) {
    ASSIGN_OR_RETURN(c.vocab_size, positive_int(file, arch + ".vocab_size"));
  } else {
    c.vocab_size = vocab_fallback;
  }

  c.tie_word_embeddings = file.find_tensor("output.weight") == nullptr;
  c.attention_bias = file.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = file.find_tensor("blk.0.attn_q_norm.weight") != nullptr;
  const auto vocab = static_cast<size_t>(c.vocab_size);
  ASSIGN_OR_RETURN(c.bos_token_id, token_id(file, "tokenizer.ggml.bos_token_id", vocab));
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.eom_token_id"}) {
    ASSIGN_OR_RETURN(const int32_t id, token_id(file, key, vocab));
    if (id >= 0 &&
        std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end()) {
      c.eos_token_ids.push_back(id);
    }
  }
  return c;
}

StatusOr<VocabData> read_vocab(const GgufFile& file) {
  VocabData v;
  ASSIGN_OR_RETURN(v.model, file.get_string("tokenizer.ggml.model"));
  if (file.has("tokenizer.ggml.pre")) {
    ASSIGN_OR_RETURN(v.pre, file.get_string("tokenizer.ggml.pre"));
  }
  ASSIGN_OR_RETURN(v.tokens, file.get_string_array("tokenizer.ggml.tokens"));
  const size_t n = v.tokens.size();
  if (file.has("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(v.scores, file.get_float_array("tokenizer.ggml.scores"));
  }
  if (file.has("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(const std::vector<int64_t> types,
                     file.get_int_array("tokenizer.ggml.token_type"));
    for (const int64_t t : types) {
      if (t < 0 || t > 6) {
        return file_error(
            file, "metadata 'tokenizer.ggml.token_type' has invalid type " + std::to_string(t));
      }
      v.token_types.push_back(static_cast<int32_t>(t));
    }
  }
  for (const auto& [key, size] : {std::pair<const char*, size_t>{"scores", v.scores.size()},
                                  {"token_type", v.token_types.size()}}) {
    if (size != 0 && size != n) {
      return file_error(file, "metadata 'tokenizer.ggml." + std::string(key) + "' has " +
                                  std::to_string(size) + " entries for " + std::to_string(n) +
                                  " tokens");
    }
  }
  if (file.has("tokenizer.ggml.merges")) {
    ASSIGN_OR_RETURN(v.merges, file.get_string_array("tokenizer.ggml.merges"));
  }
  ASSIGN_OR_RETURN(v.bos_id, token_id(file, "tokenizer.ggml.bos_token_id", n));
  ASSIGN_OR_RETURN(v.eos_id, token_id(file, "tokenizer.ggml.eos_token_id", n));
  ASSIGN_OR_RETURN(v.eot_id, token_id(file, "tokenizer.ggml.eot_token_id", n));
  ASSIGN_OR_RETURN(v.unknown_id, token_id(file, "tokenizer.ggml.unknown_token_id", n));
  ASSIGN_OR_RETURN(v.padding_id, token_id(file, "tokenizer.ggml.padding_token_id", n));
  // llama.cpp's defaults: SentencePiece vocabularies add BOS and a space prefix, BPE ones neither.
  const bool spm = v.model == "llama";
  ASSIGN_OR_RETURN(v.add_bos, bool_or(file, "tokenizer.ggml.add_bos_token", spm));
  ASSIGN_OR_RETURN(v.add_eos, bool_or(file, "tokenizer.ggml.add_eos_token", false));
  ASSIGN_OR_RETURN(v.add_space_prefix, bool_or(file, "tokenizer.ggml.add_space_prefix", spm));
  if (file.has("tokenizer.chat_template")) {
    ASSIGN_OR_RETURN(v.chat_template, file.get_string("tokenizer.chat_template"));
  }
  return v;
}

std::optional<DType> block_dtype(GgmlType type) {
  switch (type) {
    case GgmlType::kQ8_0:
      return DType::kQ8_0;
    case GgmlType::kQ4_0:
      return DType::kQ4_0;
    case GgmlType::kQ4_1:
      return DType::kQ4_1;
    case GgmlType::kQ4_K:
      return DType::kQ4_K;
    case GgmlType::kQ5_K:
      return DType::kQ5_K;
    case GgmlType::kQ6_K:
      return DType::kQ6_K;
    default:
      return std::nullopt;
  }
}

StatusOr<GgufModel> load_gguf_model(const GgufFile& file, bool keep_blocks) {
  GgufModel model;
  ASSIGN_OR_RETURN(model.config, read_model_config(file));
  ASSIGN_OR_RETURN(model.vocab, read_vocab(file));
  // Each layer has at least 9 weights: bound the layer count before listing them.
  if (static_cast<uint64_t>(model.config.num_layers) > file.tensors().size() / 9) {
    return file_error(file, "block_count " + std::to_string(model.config.num_layers) +
                                " is more than " + std::to_string(file.tensors().size()) +
                                " tensors can hold");
  }
  for (const WeightSpec& spec : weight_specs(file, model.config)) {
    ASSIGN_OR_RETURN(Tensor tensor, load_weight(file, spec, keep_blocks));
    model.tensors.emplace(spec.hf_name, std::move(tensor));
  }
  model.file = file.file();
  return model;
}

StatusOr<GgufModel> load_gguf_model(const std::string& path, bool keep_blocks) {
  ASSIGN_OR_RETURN(const GgufFile file, GgufFile::open(path));
  return load_gguf_model(file, keep_blocks);
}

}  // namespace sieve::models::gguf
