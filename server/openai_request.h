#pragma once
// OpenAI-compatible request bodies -> engine requests. Every bad input (malformed JSON, invalid
// UTF-8, a wrong type, a missing or out-of-range field, an unknown model, role or compression
// parameter, a prompt past the context) is an INVALID_ARGUMENT whose message starts with the
// field it names; api_error_from() turns that into the OpenAI error object. Pure functions of
// the body and the model context: no engine, no sockets (so the fuzzer drives them directly).

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "engine/sampling_params.h"
#include "nlohmann/json.hpp"
#include "server/compression.h"
#include "server/model_context.h"

namespace sieve::server {

enum class Endpoint { kCompletions, kChatCompletions };

// A validated /v1/completions or /v1/chat/completions request: one engine request per prompt.
struct GenerationRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::vector<std::vector<int32_t>> prompts;  // token ids, each within the context
  std::vector<std::string> echo_texts;        // per prompt, when echo is on (completions)
  engine::SamplingParams params;
  CompressionSpec compression;  // the request's, else the server's default
  int system_prompt_tokens = 0;  // chat: the prompt's first tokens that are its system message
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool continuous_usage = false;  // stream_options.continuous_usage_stats (vLLM)
};

// Most levels of nested arrays and objects a request may have: checked while parsing, so no
// later copy or comparison of a parsed value recurses deeper than this.
inline constexpr int kMaxJsonDepth = 64;

// The body as a JSON object; rejects invalid UTF-8, malformed JSON and nesting past
// kMaxJsonDepth, naming the problem.
StatusOr<nlohmann::json> parse_json_body(std::string_view body);

// POST /v1/completions: prompt as text, token ids, or a list of either.
StatusOr<GenerationRequest> parse_completion_request(const nlohmann::json& body,
                                                     const ModelContext& model);
// POST /v1/chat/completions: messages through the model's chat template.
StatusOr<GenerationRequest> parse_chat_request(const nlohmann::json& body,
                                               const ModelContext& model);
// POST /tokenize (vLLM): {"prompt": text} or {"messages": [...]}, with add_special_tokens.
StatusOr<std::vector<int32_t>> parse_tokenize_request(const nlohmann::json& body,
                                                      const ModelContext& model);
// POST /detokenize (vLLM): {"tokens": [ids]} -> the ids, each inside the vocabulary.
StatusOr<std::vector<int32_t>> parse_detokenize_request(const nlohmann::json& body,
                                                        const ModelContext& model);

// Renders chat messages (the "messages" field) through the chat template and encodes them.
StatusOr<std::vector<int32_t>> encode_chat(const nlohmann::json& messages,
                                           const ModelContext& model, bool add_generation_prompt);

// The tokens of `prompt` (encoded from `messages`) that are its leading system message, or 0.
int system_prompt_length(const nlohmann::json& messages, const ModelContext& model,
                         std::span<const int32_t> prompt);

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF).
bool is_valid_utf8(std::string_view text);

// The OpenAI error object: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the field, or empty (null)
  std::string code;   // or empty (null)
  nlohmann::json to_json() const;
};

// Maps a Status to its HTTP error: INVALID_ARGUMENT, OUT_OF_RANGE and UNIMPLEMENTED -> 400 with
// the field the message starts with as `param`; RESOURCE_EXHAUSTED -> 503; UNAUTHENTICATED ->
// 401; NOT_FOUND -> 404; anything else -> 500.
ApiError api_error_from(const Status& status);

}  // namespace sieve::server
