#pragma once
// Engine outputs -> the OpenAI wire format: streamed SSE chunks ("data: {...}\n\n", ending with
// "data: [DONE]\n\n") or one final JSON body, for completions and chat completions. One
// responder per API request; it gathers the outputs of all its prompts (choice index =
// prompt * n + sample) and their usage. Not thread-safe: one consumer.

#include <cstdint>
#include <string>
#include <vector>

#include "engine/request.h"
#include "nlohmann/json.hpp"
#include "server/model_context.h"
#include "server/openai_request.h"

namespace sieve::server {

class OpenAiResponder {
 public:
  // `id` is the response id ("cmpl-...", "chatcmpl-..."); `created` Unix seconds.
  OpenAiResponder(const GenerationRequest& request, const ModelContext& model, std::string id,
                  int64_t created);

  // Streaming: the SSE events for one output of prompt `prompt` (possibly none).
  std::string stream_chunk(int prompt, const engine::RequestOutput& out);
  // Streaming: the usage chunk when include_usage asked for it, then "data: [DONE]".
  std::string stream_end() const;
  // Streaming: an error event in the OpenAI error shape, then "data: [DONE]".
  static std::string stream_error(const ApiError& error);

  // Non-streaming: records one output.
  void collect(int prompt, const engine::RequestOutput& out);
  // Non-streaming: the whole response body once every prompt has finished.
  nlohmann::json final_response() const;

  // The first engine error message of any prompt, or empty.
  const std::string& error() const { return error_; }
  // Totals over the prompts that have finished.
  const engine::Usage& usage() const { return usage_; }

 private:
  struct Choice {
    std::string text;
    nlohmann::json logprobs;  // accumulated (non-streaming)
    std::string finish_reason;
    bool started = false;  // streaming: first chunk (role, echo) sent
    int text_offset = 0;   // completions logprobs' text_offset
  };
  Choice& choice(int prompt, int index);
  nlohmann::json logprobs_json(Choice& c, const engine::RequestOutput& out, bool for_chunk);
  nlohmann::json usage_json() const;
  // Adds a finished prompt's usage to the totals.
  void add_usage(const engine::Usage& usage);
  nlohmann::json prompt_logprobs_json(const engine::RequestOutput& out) const;
  std::string event(const nlohmann::json& chunk) const;

  const GenerationRequest& request_;
  const ModelContext& model_;
  std::string id_;
  int64_t created_;
  std::vector<Choice> choices_;
  std::vector<nlohmann::json> prompt_logprobs_;  // per prompt, when asked (vLLM's shape)
  engine::Usage usage_;
  int streamed_completion_tokens_ = 0;  // for continuous usage stats
  std::string error_;
};

// The usage object: prompt, completion and total tokens, with cached prompt tokens, and the
// KV cache the request held at its end (kv_tokens_kept, kv_bytes; see engine::Usage).
nlohmann::json usage_to_json(const engine::Usage& usage);

}  // namespace sieve::server
