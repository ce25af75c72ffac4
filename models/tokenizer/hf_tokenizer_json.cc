#include "models/tokenizer/hf_tokenizer_json.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "models/tokenizer/bpe_tokenizer.h"
#include "models/tokenizer/json_fields.h"

namespace sieve::models {
namespace {

using json = nlohmann::json;

std::string type_of(const json& node) {
  const json* type = JsonFields::find(node, "type");
  return type != nullptr && type->is_string() ? type->get<std::string>() : std::string();
}

// A PCRE2 pattern matching `literal` exactly: ASCII punctuation escaped, the rest as is.
std::string escape_regex(std::string_view literal) {
  std::string escaped;
  for (const char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u) && c != ' ') escaped.push_back('\\');
    escaped.push_back(c);
  }
  return escaped;
}

// {"String": s} or {"Regex": r}, as a regex, or as a literal when `literal` is given.
StatusOr<std::shared_ptr<const Regex>> parse_pattern(const JsonFields& f, const json& node,
                                                     std::string_view path, std::string* literal) {
  ASSIGN_OR_RETURN(const json* pattern,
                   f.object(node, "pattern", JsonFields::join(path, "pattern")));
  if (const json* s = JsonFields::find(*pattern, "String"); s != nullptr && s->is_string()) {
    if (literal != nullptr) {
      *literal = s->get<std::string>();
      return std::shared_ptr<const Regex>();
    }
    return Regex::compile(escape_regex(s->get<std::string>()));
  }
  if (const json* r = JsonFields::find(*pattern, "Regex"); r != nullptr && r->is_string()) {
    StatusOr<std::shared_ptr<const Regex>> regex = Regex::compile(r->get<std::string>());
    if (!regex.ok())
      return f.error(JsonFields::join(path, "pattern.Regex"),
                     std::string(regex.status().message()));
    return regex;
  }
  return f.error(JsonFields::join(path, "pattern"),
                 "expected {\"String\": ...} or {\"Regex\": ...}");
}

Status parse_normalizer(const JsonFields& f, const json& node, const std::string& path,
                        std::vector<NormalizerStep>* steps) {
  const std::string type = type_of(node);
  using Kind = NormalizerStep::Kind;
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(const json* list, f.array(node, "normalizers", path + ".normalizers"));
    for (size_t i = 0; i < list->size(); ++i) {
      RETURN_IF_ERROR(
          parse_normalizer(f, (*list)[i], fmt::format("{}.normalizers[{}]", path, i), steps));
    }
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    const unicode::NormalForm form = type == "NFC"    ? unicode::NormalForm::kNfc
                                     : type == "NFD"  ? unicode::NormalForm::kNfd
                                     : type == "NFKC" ? unicode::NormalForm::kNfkc
                                                      : unicode::NormalForm::kNfkd;
    NormalizerStep step(Kind::kUnicode);
    step.form = form;
    steps->push_back(std::move(step));
  } else if (type == "Prepend") {
    NormalizerStep step(Kind::kPrepend);
    ASSIGN_OR_RETURN(step.text, f.string(node, "prepend", path + ".prepend"));
    steps->push_back(std::move(step));
  } else if (type == "Replace") {
    NormalizerStep step(Kind::kReplace);
    ASSIGN_OR_RETURN(step.text, f.string(node, "content", path + ".content"));
    ASSIGN_OR_RETURN(step.regex, parse_pattern(f, node, path, &step.pattern));
    steps->push_back(std::move(step));
  } else {
    return f.unsupported(path + ".type", fmt::format("normalizer '{}' is not supported", type));
  }
  return OkStatus();
}

StatusOr<PrependScheme> parse_prepend_scheme(const JsonFields& f, const json& node,
                                             const std::string& path) {
  if (const json* scheme = JsonFields::find(node, "prepend_scheme")) {
    const std::string s = scheme->is_string() ? scheme->get<std::string>() : std::string();
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    return f.error(path + ".prepend_scheme", "expected \"always\", \"first\" or \"never\"");
  }
  ASSIGN_OR_RETURN(bool add_prefix_space,
                   f.boolean(node, "add_prefix_space", path + ".add_prefix_space", true));
  return add_prefix_space ? PrependScheme::kAlways : PrependScheme::kNever;
}

Status parse_pre_tokenizer(const JsonFields& f, const json& node, const std::string& path,
                           std::vector<PreTokenizerStep>* steps) {
  const std::string type = type_of(node);
  using Kind = PreTokenizerStep::Kind;
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(const json* list, f.array(node, "pretokenizers", path + ".pretokenizers"));
    for (size_t i = 0; i < list->size(); ++i) {
      RETURN_IF_ERROR(
          parse_pre_tokenizer(f, (*list)[i], fmt::format("{}.pretokenizers[{}]", path, i), steps));
    }
  } else if (type == "ByteLevel") {
    PreTokenizerStep step(Kind::kByteLevel);
    ASSIGN_OR_RETURN(step.add_prefix_space,
                     f.boolean(node, "add_prefix_space", path + ".add_prefix_space", true));
    ASSIGN_OR_RETURN(bool use_regex, f.boolean(node, "use_regex", path + ".use_regex", true));
    if (use_regex) {
      ASSIGN_OR_RETURN(step.regex, Regex::compile(kGpt2Pattern));
    }
    steps->push_back(std::move(step));
  } else if (type == "Split") {
    PreTokenizerStep step(Kind::kSplit);
    ASSIGN_OR_RETURN(step.regex, parse_pattern(f, node, path, nullptr));
    ASSIGN_OR_RETURN(step.invert, f.boolean(node, "invert", path + ".invert", false));
    ASSIGN_OR_RETURN(std::string behavior, f.string(node, "behavior", path + ".behavior"));
    if (behavior == "Removed") {
      step.behavior = SplitBehavior::kRemoved;
    } else if (behavior == "Isolated") {
      step.behavior = SplitBehavior::kIsolated;
    } else if (behavior == "MergedWithPrevious") {
      step.behavior = SplitBehavior::kMergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      step.behavior = SplitBehavior::kMergedWithNext;
    } else if (behavior == "Contiguous") {
      step.behavior = SplitBehavior::kContiguous;
    } else {
      return f.error(path + ".behavior", fmt::format("unknown split behavior '{}'", behavior));
    }
    steps->push_back(std::move(step));
  } else if (type == "Digits") {
    PreTokenizerStep step(Kind::kDigits);
    ASSIGN_OR_RETURN(step.individual_digits,
                     f.boolean(node, "individual_digits", path + ".individual_digits", false));
    steps->push_back(std::move(step));
  } else if (type == "Metaspace") {
    PreTokenizerStep step(Kind::kMetaspace);
    ASSIGN_OR_RETURN(step.replacement, f.string(node, "replacement", path + ".replacement"));
    ASSIGN_OR_RETURN(step.prepend_scheme, parse_prepend_scheme(f, node, path));
    ASSIGN_OR_RETURN(step.split, f.boolean(node, "split", path + ".split", true));
    steps->push_back(std::move(step));
  } else {
    return f.unsupported(path + ".type", fmt::format("pre-tokenizer '{}' is not supported", type));
  }
  return OkStatus();
}

// The decoders Llama-family tokenizers use; other combinations are Unimplemented.
Status parse_decoder(const JsonFields& f, const json* node, DecoderSpec* spec) {
  const std::string path = "decoder";
  if (node == nullptr) {
    spec->kind = DecoderSpec::Kind::kJoin;
    return OkStatus();
  }
  const std::string type = type_of(*node);
  if (type == "ByteLevel") {
    spec->kind = DecoderSpec::Kind::kByteLevel;
    return OkStatus();
  }
  if (type == "Metaspace") {
    spec->kind = DecoderSpec::Kind::kMetaspace;
    ASSIGN_OR_RETURN(spec->replacement, f.string(*node, "replacement", path + ".replacement"));
    ASSIGN_OR_RETURN(PrependScheme scheme, parse_prepend_scheme(f, *node, path));
    spec->strip_first = scheme != PrependScheme::kNever;
    return OkStatus();
  }
  // Otherwise a sequence drawn, in this order, from Replace("▁", " "), ByteFallback, Fuse and
  // Strip(" ", n, 0).
  std::vector<std::pair<std::string, const json*>> steps;
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(const json* list, f.array(*node, "decoders", path + ".decoders"));
    for (size_t i = 0; i < list->size(); ++i) {
      steps.push_back({fmt::format("{}.decoders[{}]", path, i), &(*list)[i]});
    }
  } else {
    steps.push_back({path, node});
  }
  *spec = DecoderSpec();
  spec->kind = DecoderSpec::Kind::kSentencePiece;
  spec->replace_metaspace = false;
  spec->byte_fallback = false;
  int stage = 0;  // position in the Replace, ByteFallback, Fuse, Strip order
  bool fused = false;
  for (const auto& [step_path, step] : steps) {
    const std::string step_type = type_of(*step);
    const int step_stage = step_type == "Replace"        ? 1
                           : step_type == "ByteFallback" ? 2
                           : step_type == "Fuse"         ? 3
                           : step_type == "Strip"        ? 4
                                                         : 0;
    if (step_stage <= stage) {
      return f.unsupported(step_path + ".type",
                           fmt::format("decoder '{}' is not supported here", step_type));
    }
    stage = step_stage;
    if (step_type == "Replace") {
      std::string literal;
      ASSIGN_OR_RETURN(std::shared_ptr<const Regex> regex,
                       parse_pattern(f, *step, step_path, &literal));
      ASSIGN_OR_RETURN(std::string content, f.string(*step, "content", step_path + ".content"));
      if (regex != nullptr || literal != "\u2581" || content != " ") {
        return f.unsupported(step_path, "only Replace(\"\u2581\", \" \") is supported");
      }
      spec->replace_metaspace = true;
    } else if (step_type == "ByteFallback") {
      spec->byte_fallback = true;
    } else if (step_type == "Fuse") {
      fused = true;
    } else if (step_type == "Strip") {
      ASSIGN_OR_RETURN(std::string content, f.string(*step, "content", step_path + ".content"));
      const json* start = JsonFields::find(*step, "start");
      const json* stop = JsonFields::find(*step, "stop");
      if (content != " " || start == nullptr || !start->is_number_unsigned() ||
          (stop != nullptr && stop->get<int64_t>() != 0) || !fused) {
        return f.unsupported(step_path, "only Strip(\" \", n, 0) after Fuse is supported");
      }
      spec->strip_leading_spaces = static_cast<int>(start->get<int64_t>());
    }
  }
  return OkStatus();
}

// The tokens add_special_tokens adds: TemplateProcessing's "single" template, or
// Roberta/BertProcessing's cls/sep; ByteLevel adds nothing.
Status parse_post_processor(const JsonFields& f, const json& node, const std::string& path,
                            TokenizerParts* parts) {
  const std::string type = type_of(node);
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(const json* list, f.array(node, "processors", path + ".processors"));
    for (size_t i = 0; i < list->size(); ++i) {
      RETURN_IF_ERROR(
          parse_post_processor(f, (*list)[i], fmt::format("{}.processors[{}]", path, i), parts));
    }
  } else if (type == "ByteLevel") {
    return OkStatus();
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {
      const json* pair = JsonFields::find(node, key);
      const std::string field = JsonFields::join(path, key);
      if (pair == nullptr || !pair->is_array() || pair->size() != 2) {
        return f.error(field, "expected [token, id]");
      }
      ASSIGN_OR_RETURN(int32_t id, f.id((*pair)[1], field + "[1]"));
      (std::string_view(key) == "cls" ? parts->prefix_ids : parts->suffix_ids) = {id};
    }
  } else if (type == "TemplateProcessing") {
    ASSIGN_OR_RETURN(const json* single, f.array(node, "single", path + ".single"));
    const json* special = JsonFields::find(node, "special_tokens");
    parts->prefix_ids.clear();
    parts->suffix_ids.clear();
    bool seen_sequence = false;
    for (size_t i = 0; i < single->size(); ++i) {
      const std::string field = fmt::format("{}.single[{}]", path, i);
      const json& piece = (*single)[i];
      if (JsonFields::find(piece, "Sequence") != nullptr) {
        seen_sequence = true;
        continue;
      }
      const json* token = JsonFields::find(piece, "SpecialToken");
      if (token == nullptr) return f.error(field, "expected Sequence or SpecialToken");
      ASSIGN_OR_RETURN(std::string name, f.string(*token, "id", field + ".SpecialToken.id"));
      const json* entry = special == nullptr ? nullptr : JsonFields::find(*special, name);
      const std::string entry_field = fmt::format("{}.special_tokens.{}", path, name);
      if (entry == nullptr) return f.error(entry_field, "missing");
      ASSIGN_OR_RETURN(const json* ids, f.array(*entry, "ids", entry_field + ".ids"));
      for (size_t k = 0; k < ids->size(); ++k) {
        ASSIGN_OR_RETURN(int32_t id, f.id((*ids)[k], fmt::format("{}.ids[{}]", entry_field, k)));
        (seen_sequence ? parts->suffix_ids : parts->prefix_ids).push_back(id);
      }
    }
  } else {
    return f.unsupported(path + ".type", fmt::format("post-processor '{}' is not supported", type));
  }
  return OkStatus();
}

Status parse_added_tokens(const JsonFields& f, const json& root, std::vector<AddedToken>* tokens) {
  const json* list = JsonFields::find(root, "added_tokens");
  if (list == nullptr) return OkStatus();
  if (!list->is_array()) return f.error("added_tokens", "expected an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string path = fmt::format("added_tokens[{}]", i);
    const json& item = (*list)[i];
    AddedToken token;
    const json* id = JsonFields::find(item, "id");
    if (id == nullptr) return f.error(path + ".id", "missing");
    ASSIGN_OR_RETURN(token.id, f.id(*id, path + ".id"));
    ASSIGN_OR_RETURN(token.content, f.string(item, "content", path + ".content"));
    ASSIGN_OR_RETURN(token.single_word,
                     f.boolean(item, "single_word", path + ".single_word", false));
    ASSIGN_OR_RETURN(token.lstrip, f.boolean(item, "lstrip", path + ".lstrip", false));
    ASSIGN_OR_RETURN(token.rstrip, f.boolean(item, "rstrip", path + ".rstrip", false));
    ASSIGN_OR_RETURN(token.special, f.boolean(item, "special", path + ".special", false));
    ASSIGN_OR_RETURN(token.normalized,
                     f.boolean(item, "normalized", path + ".normalized", !token.special));
    tokens->push_back(std::move(token));
  }
  return OkStatus();
}

Status parse_bpe_model(const JsonFields& f, const json& model, BpeSpec* spec) {
  const std::string type = type_of(model);
  if (!type.empty() && type != "BPE") {
    return f.unsupported("model.type", fmt::format("model '{}' is not supported (only BPE)", type));
  }
  ASSIGN_OR_RETURN(const json* vocab, f.object(model, "vocab", "model.vocab"));
  spec->vocab.reserve(vocab->size());
  for (const auto& [text, id_value] : vocab->items()) {
    ASSIGN_OR_RETURN(int32_t id, f.id(id_value, fmt::format("model.vocab.{}", text)));
    spec->vocab.emplace_back(text, id);
  }
  ASSIGN_OR_RETURN(const json* merges, f.array(model, "merges", "model.merges"));
  spec->merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const json& merge = (*merges)[i];
    const std::string path = fmt::format("model.merges[{}]", i);
    if (merge.is_string()) {  // the older "left right" form
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) return f.error(path, "expected \"left right\"");
      spec->merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      spec->merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      return f.error(path, "expected a string or a pair of strings");
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json* value = JsonFields::find(model, key);
    if (value != nullptr && !(value->is_string() && value->get<std::string>().empty())) {
      return f.unsupported(JsonFields::join("model", key), "not supported");
    }
  }
  ASSIGN_OR_RETURN(spec->byte_fallback,
                   f.boolean(model, "byte_fallback", "model.byte_fallback", false));
  ASSIGN_OR_RETURN(spec->fuse_unk, f.boolean(model, "fuse_unk", "model.fuse_unk", false));
  ASSIGN_OR_RETURN(spec->ignore_merges,
                   f.boolean(model, "ignore_merges", "model.ignore_merges", false));
  if (JsonFields::find(model, "unk_token") != nullptr) {
    ASSIGN_OR_RETURN(std::string unk, f.string(model, "unk_token", "model.unk_token"));
    const auto it = std::find_if(spec->vocab.begin(), spec->vocab.end(),
                                 [&](const auto& entry) { return entry.first == unk; });
    if (it == spec->vocab.end()) {
      return f.error("model.unk_token", fmt::format("'{}' is not in model.vocab", unk));
    }
    spec->unk_id = it->second;
  }
  return OkStatus();
}

// Looks a token up among the added tokens, then the vocabulary.
std::optional<int32_t> find_token(const TokenizerParts& parts, std::string_view text) {
  for (const AddedToken& token : parts.added_tokens) {
    if (token.content == text) return token.id;
  }
  const auto it = std::find(parts.token_texts.begin(), parts.token_texts.end(), text);
  if (it == parts.token_texts.end()) return std::nullopt;
  return static_cast<int32_t>(it - parts.token_texts.begin());
}

// A token field of tokenizer_config.json: a string, or an AddedToken object with "content".
StatusOr<std::optional<std::string>> config_token(const JsonFields& f, const json& root,
                                                  std::string_view key) {
  const json* value = JsonFields::find(root, key);
  if (value == nullptr) return std::optional<std::string>();
  if (value->is_string()) return std::optional<std::string>(value->get<std::string>());
  ASSIGN_OR_RETURN(std::string content,
                   f.string(*value, "content", fmt::format("{}.content", key)));
  return std::optional<std::string>(std::move(content));
}

}  // namespace

Status parse_tokenizer_config(std::string_view text, const std::string& file,
                              HfTokenizerConfig* config) {
  const JsonFields f(file);
  ASSIGN_OR_RETURN(json root, f.parse(text));
  if (!root.is_object()) return f.error("", "expected an object");
  ASSIGN_OR_RETURN(config->bos_token, config_token(f, root, "bos_token"));
  ASSIGN_OR_RETURN(config->eos_token, config_token(f, root, "eos_token"));
  for (const char* key : {"add_bos_token", "add_eos_token"}) {
    if (JsonFields::find(root, key) == nullptr) continue;
    ASSIGN_OR_RETURN(bool value, f.boolean(root, key, key, false));
    (std::string_view(key) == "add_bos_token" ? config->add_bos_token : config->add_eos_token) =
        value;
  }
  if (const json* chat = JsonFields::find(root, "chat_template")) {
    if (chat->is_string()) {
      config->chat_template = chat->get<std::string>();
    } else if (chat->is_array()) {  // named templates: take "default", else the first
      for (size_t i = 0; i < chat->size(); ++i) {
        const std::string path = fmt::format("chat_template[{}]", i);
        ASSIGN_OR_RETURN(std::string name, f.string((*chat)[i], "name", path + ".name"));
        ASSIGN_OR_RETURN(std::string source, f.string((*chat)[i], "template", path + ".template"));
        if (i == 0 || name == "default") config->chat_template = std::move(source);
      }
    } else {
      return f.error("chat_template", "expected a string or a list of named templates");
    }
  }
  if (const json* decoder = JsonFields::find(root, "added_tokens_decoder")) {
    if (!decoder->is_object()) return f.error("added_tokens_decoder", "expected an object");
    for (const auto& [id_text, item] : decoder->items()) {
      const std::string path = fmt::format("added_tokens_decoder.{}", id_text);
      AddedToken token;
      const auto [end, ec] =
          std::from_chars(id_text.data(), id_text.data() + id_text.size(), token.id);
      if (ec != std::errc() || end != id_text.data() + id_text.size() || token.id < 0) {
        return f.error(path, "key is not a token id");
      }
      ASSIGN_OR_RETURN(token.content, f.string(item, "content", path + ".content"));
      ASSIGN_OR_RETURN(token.single_word,
                       f.boolean(item, "single_word", path + ".single_word", false));
      ASSIGN_OR_RETURN(token.lstrip, f.boolean(item, "lstrip", path + ".lstrip", false));
      ASSIGN_OR_RETURN(token.rstrip, f.boolean(item, "rstrip", path + ".rstrip", false));
      ASSIGN_OR_RETURN(token.special, f.boolean(item, "special", path + ".special", false));
      ASSIGN_OR_RETURN(token.normalized,
                       f.boolean(item, "normalized", path + ".normalized", !token.special));
      config->added_tokens.push_back(std::move(token));
    }
  }
  return OkStatus();
}

Status parse_generation_config(std::string_view text, const std::string& file,
                               HfTokenizerConfig* config) {
  const JsonFields f(file);
  ASSIGN_OR_RETURN(json root, f.parse(text));
  const json* eos = JsonFields::find(root, "eos_token_id");
  if (eos == nullptr) return OkStatus();
  if (eos->is_array()) {
    for (size_t i = 0; i < eos->size(); ++i) {
      ASSIGN_OR_RETURN(int32_t id, f.id((*eos)[i], fmt::format("eos_token_id[{}]", i)));
      config->eos_token_ids.push_back(id);
    }
  } else {
    ASSIGN_OR_RETURN(int32_t id, f.id(*eos, "eos_token_id"));
    config->eos_token_ids.push_back(id);
  }
  return OkStatus();
}

void apply_hf_config(const HfTokenizerConfig& config, TokenizerParts* parts) {
  const auto in_range = [&](int32_t id) {
    return id < static_cast<int32_t>(parts->token_texts.size());
  };
  parts->chat_template = config.chat_template;
  if (config.bos_token) {
    parts->bos_id = find_token(*parts, *config.bos_token);
  } else if (!parts->prefix_ids.empty()) {
    parts->bos_id = parts->prefix_ids.front();
  } else {
    for (const char* name : {"<s>", "<|begin_of_text|>"}) {
      if (!parts->bos_id) parts->bos_id = find_token(*parts, name);
    }
  }
  if (config.eos_token) {
    parts->eos_id = find_token(*parts, *config.eos_token);
  } else if (!config.eos_token_ids.empty() && in_range(config.eos_token_ids.front())) {
    parts->eos_id = config.eos_token_ids.front();
  } else if (!parts->suffix_ids.empty()) {
    parts->eos_id = parts->suffix_ids.back();
  } else {
    for (const char* name : {"</s>", "<|endoftext|>", "<|end_of_text|>"}) {
      if (!parts->eos_id) parts->eos_id = find_token(*parts, name);
    }
  }
  for (const int32_t id : config.eos_token_ids) {
    if (in_range(id)) parts->extra_stop_ids.push_back(id);
  }
}

StatusOr<std::unique_ptr<Tokenizer>> parse_tokenizer_json(std::string_view text,
                                                          const std::string& file,
                                                          const HfTokenizerConfig& config) {
  const JsonFields f(file);
  ASSIGN_OR_RETURN(json root, f.parse(text));
  if (!root.is_object()) return f.error("", "expected an object");
  TokenizerParts parts;
  BpeSpec spec;
  ASSIGN_OR_RETURN(const json* model, f.object(root, "model", "model"));
  RETURN_IF_ERROR(parse_bpe_model(f, *model, &spec));
  RETURN_IF_ERROR(parse_added_tokens(f, root, &parts.added_tokens));
  if (const json* normalizer = JsonFields::find(root, "normalizer")) {
    RETURN_IF_ERROR(parse_normalizer(f, *normalizer, "normalizer", &spec.normalizer));
  }
  if (const json* pre = JsonFields::find(root, "pre_tokenizer")) {
    RETURN_IF_ERROR(parse_pre_tokenizer(f, *pre, "pre_tokenizer", &spec.pre_tokenizer));
  }
  spec.byte_level =
      std::any_of(spec.pre_tokenizer.begin(), spec.pre_tokenizer.end(),
                  [](const auto& s) { return s.kind == PreTokenizerStep::Kind::kByteLevel; });
  if (const json* post = JsonFields::find(root, "post_processor")) {
    RETURN_IF_ERROR(parse_post_processor(f, *post, "post_processor", &parts));
  }
  RETURN_IF_ERROR(parse_decoder(f, JsonFields::find(root, "decoder"), &parts.decoder));

  // Ids: the model's tokens, overlaid by the added tokens' contents.
  int32_t max_id = -1;
  for (const auto& [token, id] : spec.vocab) max_id = std::max(max_id, id);
  for (const AddedToken& token : parts.added_tokens) max_id = std::max(max_id, token.id);
  parts.token_texts.resize(static_cast<size_t>(max_id) + 1);
  for (const auto& [token, id] : spec.vocab) parts.token_texts[id] = token;
  for (const AddedToken& token : parts.added_tokens) parts.token_texts[token.id] = token.content;
  for (const int32_t id : parts.prefix_ids) {
    if (id > max_id)
      return f.error("post_processor", fmt::format("token id {} is not in the vocabulary", id));
  }
  for (const int32_t id : parts.suffix_ids) {
    if (id > max_id)
      return f.error("post_processor", fmt::format("token id {} is not in the vocabulary", id));
  }
  apply_hf_config(config, &parts);
  StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      make_bpe_tokenizer(std::move(parts), std::move(spec));
  if (!tokenizer.ok()) return f.error("model.merges", std::string(tokenizer.status().message()));
  return tokenizer;
}

}  // namespace sieve::models
