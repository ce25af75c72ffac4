#include "server/openai_request.h"

#include <cctype>
#include <cmath>
#include <limits>
#include <set>

#include "core/field_error.h"
#include "engine/input_processor.h"

namespace sieve::server {

using nlohmann::json;

bool is_valid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    const uint32_t min_of_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_of_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

StatusOr<json> parse_json_body(std::string_view body) {
  if (!is_valid_utf8(body)) return InvalidArgumentError("request body is not valid UTF-8");
  // The parser itself is iterative; copying or comparing what it built is not, so a deep body
  // (`[[[[...` 100k levels) is refused here, and past the limit nothing more is kept.
  bool too_deep = false;
  const json::parser_callback_t limit_depth = [&too_deep](int depth, json::parse_event_t event,
                                                          json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth) {
      too_deep = true;
    }
    return !too_deep;
  };
  json parsed = json::parse(body.begin(), body.end(), limit_depth, /*allow_exceptions=*/false);
  if (too_deep) {
    return InvalidArgumentError("request body nests arrays and objects deeper than " +
                                std::to_string(kMaxJsonDepth) + " levels");
  }
  if (parsed.is_discarded()) return InvalidArgumentError("request body is not valid JSON");
  if (!parsed.is_object()) return InvalidArgumentError("request body must be a JSON object");
  return parsed;
}

namespace {

// A field that is absent or null is left at its default.
const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

// True when `object` has the string `key` equal to `expected` (no copy of anything else).
bool has_string(const json& object, const char* key, std::string_view expected) {
  if (!object.is_object()) return false;
  const auto it = object.find(key);
  return it != object.end() && it->is_string() && it->get_ref<const std::string&>() == expected;
}

// An error about `field`: its message starts with the field, which also travels as data
// (core/field_error.h) for the error's `param`.
Status field_error(const std::string& field, const std::string& why) {
  return InvalidFieldError(field, field + ": " + why);
}

Status type_error(const std::string& key, const char* expected) {
  return field_error(key, std::string("must be ") + expected);
}

// Integers, accepting integral floats (5.0) as pydantic does, within [lo, hi].
Status read_int(const json& body, const char* key, int* out, int64_t lo = INT32_MIN,
                int64_t hi = INT32_MAX) {
  const json* v = field(body, key);
  if (!v) return OkStatus();
  double value = 0;
  if (v->is_number_integer()) {
    value = v->get<double>();
  } else if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>()) {
    value = v->get<double>();
  } else {
    return type_error(key, "an integer");
  }
  if (value < static_cast<double>(lo) || value > static_cast<double>(hi)) {
    return field_error(key, v->dump() + " is out of range [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "]");
  }
  *out = static_cast<int>(value);
  return OkStatus();
}

Status read_float(const json& body, const char* key, float* out) {
  const json* v = field(body, key);
  if (!v) return OkStatus();
  if (!v->is_number()) return type_error(key, "a number");
  const double value = v->get<double>();
  if (std::fabs(value) > std::numeric_limits<float>::max()) {
    return field_error(key, v->dump() + " is out of range");
  }
  *out = static_cast<float>(value);
  return OkStatus();
}

Status read_bool(const json& body, const char* key, bool* out) {
  const json* v = field(body, key);
  if (!v) return OkStatus();
  if (!v->is_boolean()) return type_error(key, "a boolean");
  *out = v->get<bool>();
  return OkStatus();
}

Status read_string(const json& body, const char* key, std::string* out) {
  const json* v = field(body, key);
  if (!v) return OkStatus();
  if (!v->is_string()) return type_error(key, "a string");
  *out = v->get<std::string>();
  return OkStatus();
}

Status read_token_ids(const json& array, const std::string& key, const ModelContext& model,
                      std::vector<int32_t>* out) {
  if (!array.is_array()) return type_error(key, "an array of token ids");
  for (size_t i = 0; i < array.size(); ++i) {
    const json& id = array[i];
    if (!id.is_number_integer()) return type_error(key, "an array of integer token ids");
    const int64_t value = id.get<int64_t>();
    RETURN_IF_ERROR(engine::check_token_id(value, i, model.config.vocab_size, key));
    out->push_back(static_cast<int32_t>(value));
  }
  return OkStatus();
}

Status read_stop(const json& body, std::vector<std::string>* out) {
  const json* v = field(body, "stop");
  if (!v) return OkStatus();
  if (v->is_string()) {
    out->push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const json& s : *v) {
      if (!s.is_string()) return type_error("stop", "a string or an array of strings");
      out->push_back(s.get<std::string>());
    }
  } else {
    return type_error("stop", "a string or an array of strings");
  }
  for (const std::string& s : *out) {
    if (s.empty()) return field_error("stop", "strings must not be empty");
  }
  return OkStatus();
}

Status check_model(const json& body, const ModelContext& model) {
  std::string name;
  RETURN_IF_ERROR(read_string(body, "model", &name));
  if (!model.serves(name)) {
    return field_error("model",
                       "'" + name + "' is not served here (serving '" + model.model_name() + "')");
  }
  return OkStatus();
}

// Fields the OpenAI API defines that Sieve does not implement: rejected when given a value,
// rather than silently ignored.
Status reject_unsupported(const json& body) {
  for (const char* key : {"tools", "functions", "logit_bias", "guided_json", "guided_regex",
                          "guided_choice", "guided_grammar", "structured_outputs"}) {
    const json* v = field(body, key);
    if (v && !v->empty()) return field_error(key, "not supported");
  }
  if (const json* v = field(body, "suffix");
      v && !(v->is_string() && v->get<std::string>().empty())) {
    return field_error("suffix", "not supported");
  }
  if (const json* v = field(body, "response_format")) {
    if (!has_string(*v, "type", "text")) {
      return field_error("response_format", "only {\"type\": \"text\"} is supported");
    }
  }
  if (const json* v = field(body, "tool_choice"); v && *v != "none" && *v != "auto") {
    return field_error("tool_choice", "not supported");
  }
  return OkStatus();
}

// Sampling fields shared by both endpoints, OpenAI's and vLLM's extras.
Status read_sampling(const json& body, engine::SamplingParams* p) {
  RETURN_IF_ERROR(read_float(body, "temperature", &p->temperature));
  RETURN_IF_ERROR(read_float(body, "top_p", &p->top_p));
  RETURN_IF_ERROR(read_int(body, "top_k", &p->top_k));
  RETURN_IF_ERROR(read_float(body, "min_p", &p->min_p));
  RETURN_IF_ERROR(read_int(body, "n", &p->n));
  if (const json* v = field(body, "seed")) {
    if (v->is_number_unsigned()) {
      p->seed = v->get<uint64_t>();
    } else if (v->is_number_integer()) {
      p->seed = static_cast<uint64_t>(v->get<int64_t>());
    } else {
      return type_error("seed", "an integer");
    }
  }
  RETURN_IF_ERROR(read_stop(body, &p->stop));
  RETURN_IF_ERROR(read_float(body, "presence_penalty", &p->presence_penalty));
  RETURN_IF_ERROR(read_float(body, "frequency_penalty", &p->frequency_penalty));
  RETURN_IF_ERROR(read_float(body, "repetition_penalty", &p->repetition_penalty));
  RETURN_IF_ERROR(read_int(body, "min_tokens", &p->min_tokens));
  RETURN_IF_ERROR(read_bool(body, "ignore_eos", &p->ignore_eos));
  if (const json* v = field(body, "stop_token_ids")) {
    if (!v->is_array()) return type_error("stop_token_ids", "an array of token ids");
    for (const json& id : *v) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return type_error("stop_token_ids", "an array of token ids");
      }
      p->stop_token_ids.push_back(id.get<int32_t>());
    }
  }
  RETURN_IF_ERROR(read_bool(body, "include_stop_str_in_output", &p->include_stop_str_in_output));
  RETURN_IF_ERROR(read_bool(body, "skip_special_tokens", &p->skip_special_tokens));
  RETURN_IF_ERROR(read_int(body, "prompt_logprobs", &p->prompt_logprobs));
  if (field(body, "best_of")) {
    int best_of = 0;
    RETURN_IF_ERROR(read_int(body, "best_of", &best_of));
    if (best_of != p->n) return field_error("best_of", "only best_of == n is supported");
  }
  return OkStatus();
}

Status read_stream_options(const json& body, GenerationRequest* r) {
  RETURN_IF_ERROR(read_bool(body, "stream", &r->stream));
  const json* options = field(body, "stream_options");
  if (!options) return OkStatus();
  if (!options->is_object()) return type_error("stream_options", "an object");
  if (!r->stream) return field_error("stream_options", "only allowed with stream true");
  auto read_option = [&](const char* key, bool* out) -> Status {
    const json* v = field(*options, key);
    if (!v) return OkStatus();
    if (!v->is_boolean()) return type_error(std::string("stream_options.") + key, "a boolean");
    *out = v->get<bool>();
    return OkStatus();
  };
  RETURN_IF_ERROR(read_option("include_usage", &r->include_usage));
  RETURN_IF_ERROR(read_option("continuous_usage_stats", &r->continuous_usage));
  return OkStatus();
}

Status read_compression(const json& body, const ModelContext& model, GenerationRequest* r) {
  const json* v = field(body, "compression");
  if (!v) {
    r->compression = model.default_compression;
    return OkStatus();
  }
  ASSIGN_OR_RETURN(r->compression, parse_compression(*v));
  return OkStatus();
}

// Checks every prompt with the parameters as the engine will (engine/input_processor.h), so a
// call with several prompts fails before any of them starts; errors use this API's names.
Status check_prompts(const GenerationRequest& r, const ModelContext& model,
                     const engine::RequestFields& fields) {
  if (r.prompts.empty()) return engine::validate(r.params);
  for (const std::vector<int32_t>& prompt : r.prompts) {
    RETURN_IF_ERROR(engine::check_request(prompt, r.params, model.input_limits(), fields));
  }
  return OkStatus();
}

std::vector<int32_t> encode_text(const std::string& text, const ModelContext& model,
                                 bool add_special_tokens) {
  return model.tokenizer->encode(text, add_special_tokens);
}

Status need_tokenizer(const ModelContext& model, const char* key) {
  if (model.tokenizer) return OkStatus();
  return field_error(key, "the model has no tokenizer; send token ids instead");
}

constexpr size_t kMaxPromptsPerRequest = 256;

}  // namespace

StatusOr<GenerationRequest> parse_completion_request(const json& body, const ModelContext& model) {
  GenerationRequest r;
  r.endpoint = Endpoint::kCompletions;
  RETURN_IF_ERROR(check_model(body, model));
  RETURN_IF_ERROR(reject_unsupported(body));
  RETURN_IF_ERROR(read_stream_options(body, &r));
  r.params.max_tokens = 16;  // OpenAI's default for completions, unless the model has its own
  apply_generation_defaults(model.generation_defaults, &r.params);
  RETURN_IF_ERROR(read_sampling(body, &r.params));
  RETURN_IF_ERROR(read_int(body, "max_tokens", &r.params.max_tokens));
  RETURN_IF_ERROR(read_int(body, "max_completion_tokens", &r.params.max_tokens));
  if (const json* v = field(body, "logprobs")) {
    if (!v->is_number_integer()) return type_error("logprobs", "an integer");
    RETURN_IF_ERROR(read_int(body, "logprobs", &r.params.logprobs, 0, engine::kMaxLogprobs));
  }
  bool echo = false, add_special_tokens = true;
  RETURN_IF_ERROR(read_bool(body, "echo", &echo));
  RETURN_IF_ERROR(read_bool(body, "add_special_tokens", &add_special_tokens));
  if (echo && r.params.logprobs >= 0) {
    return field_error("echo", "echo with logprobs needs prompt logprobs, not supported");
  }
  RETURN_IF_ERROR(read_compression(body, model, &r));

  const json* prompt = field(body, "prompt");
  if (!prompt) return field_error("prompt", "required");
  std::vector<std::string> texts;
  if (prompt->is_string()) {
    texts.push_back(prompt->get<std::string>());
  } else if (prompt->is_array()) {
    if (prompt->empty()) return field_error("prompt", "must not be empty");
    if ((*prompt)[0].is_number_integer()) {
      r.prompts.emplace_back();
      RETURN_IF_ERROR(read_token_ids(*prompt, "prompt", model, &r.prompts.back()));
    } else if ((*prompt)[0].is_string()) {
      for (const json& p : *prompt) {
        if (!p.is_string()) return type_error("prompt", "a string or an array of strings");
        texts.push_back(p.get<std::string>());
      }
    } else if ((*prompt)[0].is_array()) {
      for (const json& p : *prompt) {
        r.prompts.emplace_back();
        RETURN_IF_ERROR(read_token_ids(p, "prompt", model, &r.prompts.back()));
      }
    } else {
      return type_error("prompt", "a string, an array of strings, or token ids");
    }
  } else {
    return type_error("prompt", "a string, an array of strings, or token ids");
  }
  if (texts.size() + r.prompts.size() > kMaxPromptsPerRequest) {
    return field_error(
        "prompt", "at most " + std::to_string(kMaxPromptsPerRequest) + " prompts in one request");
  }
  if (!texts.empty()) RETURN_IF_ERROR(need_tokenizer(model, "prompt"));
  for (const std::string& text : texts) {
    r.prompts.push_back(encode_text(text, model, add_special_tokens));
  }
  if (echo) {
    for (size_t i = 0; i < r.prompts.size(); ++i) {
      if (i < texts.size()) {
        r.echo_texts.push_back(texts[i]);
      } else {
        RETURN_IF_ERROR(need_tokenizer(model, "echo"));
        r.echo_texts.push_back(
            model.tokenizer->decode(r.prompts[i], /*skip_special_tokens=*/false));
      }
    }
  }
  RETURN_IF_ERROR(check_prompts(r, model, {"prompt", "max_tokens"}));
  return r;
}

int system_prompt_length(const json& messages, const ModelContext& model,
                         std::span<const int32_t> prompt) {
  if (!messages.is_array() || messages.empty() || !messages[0].is_object()) return 0;
  const json* role = field(messages[0], "role");
  if (!role || !role->is_string() ||
      (role->get<std::string>() != "system" && role->get<std::string>() != "developer")) {
    return 0;
  }
  // The system message alone, rendered as the template renders it first: its tokens start the
  // prompt (chat templates close a turn with a special token, so nothing merges across it).
  auto system = encode_chat(json::array({messages[0]}), model, /*add_generation_prompt=*/false);
  if (!system.ok() || system->size() > prompt.size() ||
      !std::equal(system->begin(), system->end(), prompt.begin())) {
    return 0;
  }
  return static_cast<int>(system->size());
}

StatusOr<std::vector<int32_t>> encode_chat(const json& messages, const ModelContext& model,
                                           bool add_generation_prompt) {
  if (!messages.is_array()) return type_error("messages", "an array of messages");
  if (messages.empty()) return field_error("messages", "must not be empty");
  RETURN_IF_ERROR(need_tokenizer(model, "messages"));
  std::vector<models::ChatMessage> chat;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string key = "messages[" + std::to_string(i) + "]";
    const json& m = messages[i];
    if (!m.is_object()) return type_error(key, "an object");
    const json* role = field(m, "role");
    if (!role) return field_error(key + ".role", "required");
    if (!role->is_string()) return type_error(key + ".role", "a string");
    std::string role_name = role->get<std::string>();
    if (role_name == "developer") role_name = "system";  // OpenAI's newer name for it
    if (role_name != "system" && role_name != "user" && role_name != "assistant") {
      return field_error(key + ".role", "unknown role '" + role->get<std::string>() +
                                            "' (expected system, user or assistant)");
    }
    std::string content;
    const json* c = field(m, "content");
    if (c && c->is_string()) {
      content = c->get<std::string>();
    } else if (c && c->is_array()) {
      // Content parts: only text ones, concatenated as vLLM does.
      for (size_t j = 0; j < c->size(); ++j) {
        const json& part = (*c)[j];
        const std::string part_key = key + ".content[" + std::to_string(j) + "]";
        if (!has_string(part, "type", "text")) {
          return field_error(part_key, "only {\"type\": \"text\"} parts are supported");
        }
        const json* text = field(part, "text");
        if (!text || !text->is_string()) return type_error(part_key + ".text", "a string");
        if (!content.empty()) content += "\n";
        content += text->get<std::string>();
      }
    } else if (c) {
      return type_error(key + ".content", "a string or an array of text parts");
    } else if (role_name != "assistant") {
      return field_error(key + ".content", "required");
    }
    chat.push_back({role_name, std::move(content)});
  }
  auto text = models::apply_chat_template(model.chat_template, chat, add_generation_prompt);
  if (!text.ok()) return field_error("messages", std::string(text.status().message()));
  // The template writes BOS itself where the model wants one.
  return model.tokenizer->encode(*text, /*add_special_tokens=*/false);
}

StatusOr<GenerationRequest> parse_chat_request(const json& body, const ModelContext& model) {
  GenerationRequest r;
  r.endpoint = Endpoint::kChatCompletions;
  RETURN_IF_ERROR(check_model(body, model));
  RETURN_IF_ERROR(reject_unsupported(body));
  RETURN_IF_ERROR(read_stream_options(body, &r));
  apply_generation_defaults(model.generation_defaults, &r.params);
  RETURN_IF_ERROR(read_sampling(body, &r.params));
  bool logprobs = false;
  int top_logprobs = -1;
  RETURN_IF_ERROR(read_bool(body, "logprobs", &logprobs));
  RETURN_IF_ERROR(read_int(body, "top_logprobs", &top_logprobs, 0, engine::kMaxLogprobs));
  if (top_logprobs >= 0 && !logprobs) {
    return field_error("top_logprobs", "needs logprobs set to true");
  }
  if (logprobs) r.params.logprobs = std::max(top_logprobs, 0);
  RETURN_IF_ERROR(read_compression(body, model, &r));
  bool add_generation_prompt = true;
  RETURN_IF_ERROR(read_bool(body, "add_generation_prompt", &add_generation_prompt));
  const json* messages = field(body, "messages");
  if (!messages) return field_error("messages", "required");
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                   encode_chat(*messages, model, add_generation_prompt));
  r.system_prompt_tokens = system_prompt_length(*messages, model, prompt);
  const int prompt_len = static_cast<int>(prompt.size());
  r.prompts.push_back(std::move(prompt));
  // Chat's default: the rest of the context, or the model's max_new_tokens within it (vLLM's).
  r.params.max_tokens = std::max(1, model.max_model_len - prompt_len);
  if (const auto& max_new_tokens = model.generation_defaults.max_tokens) {
    r.params.max_tokens = std::min(r.params.max_tokens, *max_new_tokens);
  }
  const char* max_key = "max_tokens";
  RETURN_IF_ERROR(read_int(body, "max_tokens", &r.params.max_tokens));
  if (field(body, "max_completion_tokens")) {
    max_key = "max_completion_tokens";
    RETURN_IF_ERROR(read_int(body, "max_completion_tokens", &r.params.max_tokens));
  }
  RETURN_IF_ERROR(check_prompts(r, model, {"messages", max_key}));
  return r;
}

StatusOr<std::vector<int32_t>> parse_tokenize_request(const json& body, const ModelContext& model) {
  RETURN_IF_ERROR(check_model(body, model));
  if (const json* messages = field(body, "messages")) {
    bool add_generation_prompt = true;
    RETURN_IF_ERROR(read_bool(body, "add_generation_prompt", &add_generation_prompt));
    return encode_chat(*messages, model, add_generation_prompt);
  }
  const json* prompt = field(body, "prompt");
  if (!prompt) return field_error("prompt", "required (or messages)");
  if (!prompt->is_string()) return type_error("prompt", "a string");
  RETURN_IF_ERROR(need_tokenizer(model, "prompt"));
  bool add_special_tokens = true;
  RETURN_IF_ERROR(read_bool(body, "add_special_tokens", &add_special_tokens));
  return encode_text(prompt->get<std::string>(), model, add_special_tokens);
}

StatusOr<std::vector<int32_t>> parse_detokenize_request(const json& body,
                                                        const ModelContext& model) {
  RETURN_IF_ERROR(check_model(body, model));
  const json* tokens = field(body, "tokens");
  if (!tokens) return field_error("tokens", "required");
  RETURN_IF_ERROR(need_tokenizer(model, "tokens"));
  std::vector<int32_t> ids;
  RETURN_IF_ERROR(read_token_ids(*tokens, "tokens", model, &ids));
  return ids;
}

json ApiError::to_json() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json() : json(param)},
            {"code", code.empty() ? json() : json(code)}}}};
}

namespace {

// The field a message starts with ("max_tokens: ...", "messages[2].role: ...", "top_p must ..."),
// when it is one the API defines.
std::string param_of(std::string_view message) {
  static const std::set<std::string, std::less<>> kFields = {"model",
                                                             "prompt",
                                                             "messages",
                                                             "max_tokens",
                                                             "max_completion_tokens",
                                                             "temperature",
                                                             "top_p",
                                                             "top_k",
                                                             "min_p",
                                                             "n",
                                                             "stream",
                                                             "stream_options",
                                                             "logprobs",
                                                             "top_logprobs",
                                                             "stop",
                                                             "seed",
                                                             "presence_penalty",
                                                             "frequency_penalty",
                                                             "repetition_penalty",
                                                             "min_tokens",
                                                             "ignore_eos",
                                                             "stop_token_ids",
                                                             "include_stop_str_in_output",
                                                             "skip_special_tokens",
                                                             "add_special_tokens",
                                                             "echo",
                                                             "best_of",
                                                             "logit_bias",
                                                             "suffix",
                                                             "tools",
                                                             "functions",
                                                             "tool_choice",
                                                             "response_format",
                                                             "compression",
                                                             "prompt_logprobs",
                                                             "tokens",
                                                             "add_generation_prompt",
                                                             "guided_json",
                                                             "guided_regex",
                                                             "guided_choice",
                                                             "guided_grammar",
                                                             "structured_outputs"};
  size_t end = 0;
  while (end < message.size() &&
         (std::isalnum(static_cast<unsigned char>(message[end])) || message[end] == '_' ||
          message[end] == '.' || message[end] == '[' || message[end] == ']')) {
    ++end;
  }
  const std::string_view path = message.substr(0, end);
  const std::string_view root = path.substr(0, path.find_first_of(".["));
  if (end == message.size() || (message[end] != ':' && message[end] != ' ')) return "";
  return kFields.contains(root) ? std::string(path) : "";
}

}  // namespace

ApiError api_error_from(const Status& status) {
  ApiError e;
  e.message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
      e.http_status = 400;
      // The field travels with the error (core/field_error.h); errors made without it still
      // start with the field they name.
      e.param = error_field(status);
      if (e.param.empty()) e.param = param_of(e.message);
      if (e.param == "model") e.code = "model_not_found";
      break;
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable:
      e.http_status = 503;
      e.type = "service_unavailable_error";
      break;
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401;
      e.type = "authentication_error";
      e.code = "invalid_api_key";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "not_found_error";
      break;
    default:
      e.http_status = 500;
      e.type = "internal_server_error";
      break;
  }
  return e;
}

}  // namespace sieve::server
