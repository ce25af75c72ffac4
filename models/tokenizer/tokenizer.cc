#include "models/tokenizer/tokenizer.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/mapped_file.h"
#include "models/tokenizer/bpe_tokenizer.h"
#include "models/tokenizer/hf_tokenizer_json.h"
#include "models/tokenizer/sentencepiece_tokenizer.h"
#include "models/tokenizer/spm_model.h"

namespace sieve::models {
namespace {

namespace fs = std::filesystem;

StatusOr<std::string> read_file(const std::string& path) {
  if (fs::file_size(path) == 0) return std::string();  // mmap refuses empty files
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  return std::string(reinterpret_cast<const char*>(file->data()), file->size());
}

Status with_file(const Status& status, const std::string& path) {
  return Status(status.code(), fmt::format("{}: {}", path, std::string(status.message())));
}

// tokenizer.model through libsentencepiece, with BOS/EOS added as LlamaTokenizerFast adds them
// (add_bos_token defaults to true, add_eos_token to false).
StatusOr<std::unique_ptr<Tokenizer>> load_sentencepiece_file(const std::string& path,
                                                             const HfTokenizerConfig& config) {
  ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  StatusOr<SpmModel> model = parse_spm_model(bytes);
  if (!model.ok()) return with_file(model.status(), path);
  TokenizerParts parts;
  parts.added_tokens = config.added_tokens;
  fill_sentencepiece_parts(*model, &parts);
  apply_hf_config(config, &parts);
  if (config.add_bos_token.value_or(true) && parts.bos_id) parts.prefix_ids = {*parts.bos_id};
  if (config.add_eos_token.value_or(false) && parts.eos_id) parts.suffix_ids = {*parts.eos_id};
  StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      make_sentencepiece_tokenizer(bytes, std::move(parts));
  if (!tokenizer.ok()) return with_file(tokenizer.status(), path);
  return tokenizer;
}

Status vocab_error(std::string_view field, std::string_view what) {
  return InvalidArgumentError(fmt::format("GGUF vocabulary: field '{}': {}", field, what));
}

// The GGUF pieces every vocabulary shares: token texts, control tokens as special added tokens,
// user-defined ones as plain added tokens, BOS/EOS/EOT and the chat template.
StatusOr<TokenizerParts> gguf_parts(const VocabData& vocab) {
  const auto num_tokens = static_cast<int32_t>(vocab.tokens.size());
  if (num_tokens == 0) return vocab_error("tokenizer.ggml.tokens", "empty");
  if (!vocab.token_types.empty() && vocab.token_types.size() != vocab.tokens.size()) {
    return vocab_error(
        "tokenizer.ggml.token_type",
        fmt::format("{} entries for {} tokens", vocab.token_types.size(), vocab.tokens.size()));
  }
  TokenizerParts parts;
  parts.token_texts = vocab.tokens;
  for (int32_t id = 0; id < num_tokens && !vocab.token_types.empty(); ++id) {
    const int32_t type = vocab.token_types[id];
    if (type == SpmModel::kControl || type == SpmModel::kUserDefined) {
      parts.added_tokens.emplace_back(id, vocab.tokens[id], type == SpmModel::kControl);
    }
  }
  const auto valid = [&](int32_t id, std::string_view field) -> StatusOr<std::optional<int32_t>> {
    if (id < 0) return std::optional<int32_t>();
    if (id >= num_tokens) {
      return vocab_error(field,
                         fmt::format("id {} out of range (vocabulary of {})", id, num_tokens));
    }
    return std::optional<int32_t>(id);
  };
  ASSIGN_OR_RETURN(parts.bos_id, valid(vocab.bos_id, "tokenizer.ggml.bos_token_id"));
  ASSIGN_OR_RETURN(parts.eos_id, valid(vocab.eos_id, "tokenizer.ggml.eos_token_id"));
  ASSIGN_OR_RETURN(std::optional<int32_t> eot, valid(vocab.eot_id, "tokenizer.ggml.eot_token_id"));
  if (eot) parts.extra_stop_ids.push_back(*eot);
  if (vocab.add_bos && parts.bos_id) parts.prefix_ids = {*parts.bos_id};
  if (vocab.add_eos && parts.eos_id) parts.suffix_ids = {*parts.eos_id};
  parts.chat_template = vocab.chat_template;
  return parts;
}

StatusOr<std::unique_ptr<Tokenizer>> gguf_bpe(const VocabData& vocab, TokenizerParts parts) {
  BpeSpec spec;
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    if (!vocab.token_types.empty() && vocab.token_types[id] == SpmModel::kControl) continue;
    spec.vocab.emplace_back(vocab.tokens[id], static_cast<int32_t>(id));
  }
  spec.merges.reserve(vocab.merges.size());
  for (size_t i = 0; i < vocab.merges.size(); ++i) {
    const std::string& merge = vocab.merges[i];
    const size_t space = merge.find(' ');
    if (space == std::string::npos) {
      return vocab_error(fmt::format("tokenizer.ggml.merges[{}]", i), "expected \"left right\"");
    }
    spec.merges.emplace_back(merge.substr(0, space), merge.substr(space + 1));
  }
  RETURN_IF_ERROR(apply_gguf_pre(vocab.pre, &spec));
  if (vocab.unknown_id >= 0 && vocab.unknown_id < static_cast<int32_t>(vocab.tokens.size())) {
    spec.unk_id = vocab.unknown_id;
  }
  parts.decoder.kind = DecoderSpec::Kind::kByteLevel;
  StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      make_bpe_tokenizer(std::move(parts), std::move(spec));
  if (!tokenizer.ok())
    return vocab_error("tokenizer.ggml.merges", std::string(tokenizer.status().message()));
  return tokenizer;
}

// A "llama" vocabulary becomes a BPE ModelProto for libsentencepiece: its BPE encoder merges the
// adjacent pair whose result has the highest score, which is llama.cpp's SPM algorithm too, so
// one tested SentencePiece implementation serves both tokenizer.model files and GGUF.
StatusOr<std::unique_ptr<Tokenizer>> gguf_sentencepiece(const VocabData& vocab,
                                                        TokenizerParts parts) {
  if (vocab.scores.size() != vocab.tokens.size()) {
    return vocab_error(
        "tokenizer.ggml.scores",
        fmt::format("{} scores for {} tokens", vocab.scores.size(), vocab.tokens.size()));
  }
  SpmModel model;
  model.model_type = 2;
  model.normalizer_name = "identity";
  model.add_dummy_prefix = vocab.add_space_prefix;
  model.remove_extra_whitespaces = false;
  model.pieces.reserve(vocab.tokens.size());
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    int type = vocab.token_types.empty() ? SpmModel::kNormal : vocab.token_types[id];
    if (static_cast<int32_t>(id) == vocab.unknown_id) type = SpmModel::kUnknown;
    if (type < SpmModel::kNormal || type > SpmModel::kByte) {
      return vocab_error(fmt::format("tokenizer.ggml.token_type[{}]", id),
                         fmt::format("unknown token type {}", type));
    }
    model.byte_fallback |= type == SpmModel::kByte;
    model.pieces.push_back({vocab.tokens[id], vocab.scores[id], type});
  }
  fill_sentencepiece_parts(model, &parts);
  StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      make_sentencepiece_tokenizer(serialize_spm_model(model), std::move(parts));
  if (!tokenizer.ok())
    return vocab_error("tokenizer.ggml.tokens", std::string(tokenizer.status().message()));
  return tokenizer;
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer_from_hf_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return NotFoundError(fmt::format("tokenizer directory '{}' does not exist", dir));
  }
  HfTokenizerConfig config;
  const std::string config_path = (fs::path(dir) / "tokenizer_config.json").string();
  if (fs::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(std::string text, read_file(config_path));
    RETURN_IF_ERROR(parse_tokenizer_config(text, config_path, &config));
  }
  const std::string generation_path = (fs::path(dir) / "generation_config.json").string();
  if (fs::exists(generation_path, ec)) {
    ASSIGN_OR_RETURN(std::string text, read_file(generation_path));
    RETURN_IF_ERROR(parse_generation_config(text, generation_path, &config));
  }
  const std::string json_path = (fs::path(dir) / "tokenizer.json").string();
  if (fs::exists(json_path, ec)) {
    ASSIGN_OR_RETURN(std::string text, read_file(json_path));
    return parse_tokenizer_json(text, json_path, config);
  }
  const std::string model_path = (fs::path(dir) / "tokenizer.model").string();
  if (fs::exists(model_path, ec)) return load_sentencepiece_file(model_path, config);
  return NotFoundError(fmt::format("'{}' has neither tokenizer.json nor tokenizer.model", dir));
}

StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer_from_vocab(const VocabData& vocab) {
  if (vocab.model != "gpt2" && vocab.model != "llama") {
    return UnimplementedError(fmt::format(
        "GGUF vocabulary: field 'tokenizer.ggml.model': '{}' is not supported (gpt2, llama)",
        vocab.model));
  }
  ASSIGN_OR_RETURN(TokenizerParts parts, gguf_parts(vocab));
  if (vocab.model == "gpt2") return gguf_bpe(vocab, std::move(parts));
  return gguf_sentencepiece(vocab, std::move(parts));
}

}  // namespace sieve::models
