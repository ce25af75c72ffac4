#include "server/openai_response.h"

namespace sieve::server {

using nlohmann::json;

namespace {

// Invalid UTF-8 never reaches here (the detokenizer repairs it), but a JSON dump must not throw.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

json usage_to_json(const engine::Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_prompt_tokens}}},
          {"kv_tokens_kept", usage.kv_tokens_kept},
          {"kv_bytes", usage.kv_bytes}};
}

OpenAiResponder::OpenAiResponder(const GenerationRequest& request, const ModelContext& model,
                                 std::string id, int64_t created)
    : request_(request),
      model_(model),
      id_(std::move(id)),
      created_(created),
      choices_(request.prompts.size() * static_cast<size_t>(request.params.n)),
      prompt_logprobs_(request.prompts.size()) {}

// vLLM's prompt_logprobs: null for the first prompt token, then per position a map from token
// id to {logprob, rank, decoded_token} holding the prompt's token and the top alternatives.
json OpenAiResponder::prompt_logprobs_json(const engine::RequestOutput& out) const {
  json positions = json::array({nullptr});
  for (const engine::TokenLogprob& lp : out.prompt_logprobs) {
    auto entry = [&](int32_t id, float logprob, json rank) {
      std::string text = std::to_string(id);
      if (model_.tokenizer)
        text = model_.tokenizer->decode(std::span<const int32_t>(&id, 1), false);
      return json{{"logprob", logprob}, {"rank", rank}, {"decoded_token", text}};
    };
    json position = json::object();
    json rank = nullptr;
    for (size_t k = 0; k < lp.top.size(); ++k) {
      if (lp.top[k].first == lp.token_id) rank = static_cast<int>(k + 1);
      position[std::to_string(lp.top[k].first)] =
          entry(lp.top[k].first, lp.top[k].second, static_cast<int>(k + 1));
    }
    position[std::to_string(lp.token_id)] = entry(lp.token_id, lp.logprob, rank);
    positions.push_back(std::move(position));
  }
  return positions;
}

OpenAiResponder::Choice& OpenAiResponder::choice(int prompt, int index) {
  return choices_.at(static_cast<size_t>(prompt) * request_.params.n + index);
}

json OpenAiResponder::logprobs_json(Choice& c, const engine::RequestOutput& out, bool for_chunk) {
  const bool chat = request_.endpoint == Endpoint::kChatCompletions;
  auto token_text = [&](int32_t id) {
    if (!model_.tokenizer) return std::to_string(id);
    return model_.tokenizer->decode(std::span<const int32_t>(&id, 1), false);
  };
  auto bytes = [](const std::string& s) {
    json b = json::array();
    for (unsigned char ch : s) b.push_back(static_cast<int>(ch));
    return b;
  };
  json result = for_chunk ? json() : c.logprobs;
  if (chat) {
    if (result.is_null()) result = {{"content", json::array()}};
    for (const engine::TokenLogprob& lp : out.logprobs) {
      const std::string text = token_text(lp.token_id);
      json top = json::array();
      for (const auto& [id, logprob] : lp.top) {
        const std::string t = token_text(id);
        top.push_back({{"token", t}, {"logprob", logprob}, {"bytes", bytes(t)}});
      }
      result["content"].push_back({{"token", text},
                                   {"logprob", lp.logprob},
                                   {"bytes", bytes(text)},
                                   {"top_logprobs", top}});
    }
    return result;
  }
  if (result.is_null()) {
    result = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  }
  for (const engine::TokenLogprob& lp : out.logprobs) {
    const std::string text = token_text(lp.token_id);
    json top = json::object();
    for (const auto& [id, logprob] : lp.top) top[token_text(id)] = logprob;
    result["tokens"].push_back(text);
    result["token_logprobs"].push_back(lp.logprob);
    result["top_logprobs"].push_back(top);
    result["text_offset"].push_back(c.text_offset);
    c.text_offset += static_cast<int>(text.size());
  }
  return result;
}

json OpenAiResponder::usage_json() const { return usage_to_json(usage_); }

void OpenAiResponder::add_usage(const engine::Usage& usage) {
  usage_.prompt_tokens += usage.prompt_tokens;
  usage_.completion_tokens += usage.completion_tokens;
  usage_.cached_prompt_tokens += usage.cached_prompt_tokens;
  usage_.kv_tokens_kept += usage.kv_tokens_kept;
  usage_.kv_bytes += usage.kv_bytes;
}

std::string OpenAiResponder::event(const json& chunk) const {
  return "data: " + dump(chunk) + "\n\n";
}

std::string OpenAiResponder::stream_chunk(int prompt, const engine::RequestOutput& out) {
  if (out.finished_request) add_usage(out.usage);
  if (out.finish_reason == "error" && error_.empty()) error_ = out.error;
  streamed_completion_tokens_ += static_cast<int>(out.token_ids.size());
  Choice& c = choice(prompt, out.index);
  const bool chat = request_.endpoint == Endpoint::kChatCompletions;
  const bool has_logprobs = request_.params.logprobs >= 0 && !out.logprobs.empty();
  std::string text = out.text;
  std::string events;
  if (!c.started) {
    c.started = true;
    if (chat) {
      // The first chunk of a chat choice names the role, as OpenAI's do.
      json role = {{"index", prompt * request_.params.n + out.index},
                   {"delta", {{"role", "assistant"}, {"content", ""}}},
                   {"logprobs", nullptr},
                   {"finish_reason", nullptr}};
      events += event({{"id", id_},
                       {"object", "chat.completion.chunk"},
                       {"created", created_},
                       {"model", model_.model_name()},
                       {"choices", json::array({role})}});
    } else if (!request_.echo_texts.empty()) {
      text = request_.echo_texts[prompt] + text;
      c.text_offset = static_cast<int>(request_.echo_texts[prompt].size());
    }
  }
  const bool has_prompt_logprobs = !out.prompt_logprobs.empty();
  // Chunks without text are dropped, except that a model served without a tokenizer streams
  // one (empty) chunk per token, so clients still see each token arrive.
  const bool token_without_text = model_.tokenizer == nullptr && !out.token_ids.empty();
  if (text.empty() && !has_logprobs && !has_prompt_logprobs && !out.finish_reason &&
      !token_without_text) {
    return events;
  }
  json choice_json = {{"index", prompt * request_.params.n + out.index},
                      {"logprobs", has_logprobs ? logprobs_json(c, out, true) : json()},
                      {"finish_reason", out.finish_reason ? json(*out.finish_reason) : json()},
                      {"stop_reason", nullptr}};
  if (chat) {
    choice_json["delta"] = text.empty() ? json::object() : json{{"content", text}};
  } else {
    choice_json["text"] = text;
  }
  if (has_prompt_logprobs) choice_json["prompt_logprobs"] = prompt_logprobs_json(out);
  json chunk = {{"id", id_},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created_},
                {"model", model_.model_name()},
                {"choices", json::array({choice_json})}};
  if (request_.continuous_usage) {
    engine::Usage so_far;
    for (const auto& p : request_.prompts) so_far.prompt_tokens += static_cast<int>(p.size());
    so_far.completion_tokens = streamed_completion_tokens_;
    json usage = usage_to_json(so_far);
    usage.erase("kv_tokens_kept");  // known once the request ends
    usage.erase("kv_bytes");
    chunk["usage"] = std::move(usage);
  }
  return events + event(chunk);
}

std::string OpenAiResponder::stream_end() const {
  std::string events;
  if (request_.include_usage) {
    const bool chat = request_.endpoint == Endpoint::kChatCompletions;
    events += event({{"id", id_},
                     {"object", chat ? "chat.completion.chunk" : "text_completion"},
                     {"created", created_},
                     {"model", model_.model_name()},
                     {"choices", json::array()},
                     {"usage", usage_json()}});
  }
  return events + "data: [DONE]\n\n";
}

std::string OpenAiResponder::stream_error(const ApiError& error) {
  return "data: " + dump(error.to_json()) + "\n\ndata: [DONE]\n\n";
}

void OpenAiResponder::collect(int prompt, const engine::RequestOutput& out) {
  if (out.finished_request) add_usage(out.usage);
  if (out.finish_reason == "error" && error_.empty()) error_ = out.error;
  Choice& c = choice(prompt, out.index);
  if (!c.started) {
    c.started = true;
    if (request_.endpoint == Endpoint::kCompletions && !request_.echo_texts.empty()) {
      c.text = request_.echo_texts[prompt];
      c.text_offset = static_cast<int>(c.text.size());
    }
  }
  if (request_.params.logprobs >= 0 && !out.logprobs.empty()) {
    c.logprobs = logprobs_json(c, out, false);
  }
  if (!out.prompt_logprobs.empty()) prompt_logprobs_[prompt] = prompt_logprobs_json(out);
  c.text += out.text;
  if (out.finish_reason) c.finish_reason = *out.finish_reason;
}

json OpenAiResponder::final_response() const {
  const bool chat = request_.endpoint == Endpoint::kChatCompletions;
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    json logprobs = c.logprobs;
    if (request_.params.logprobs >= 0 && logprobs.is_null()) {
      logprobs = chat ? json{{"content", json::array()}} : json::object();
    }
    json choice_json = {{"index", i},
                        {"logprobs", logprobs},
                        {"finish_reason", c.finish_reason},
                        {"stop_reason", nullptr}};
    if (chat) {
      choice_json["message"] = {{"role", "assistant"}, {"content", c.text}};
    } else {
      choice_json["text"] = c.text;
      if (request_.params.prompt_logprobs >= 0) {
        choice_json["prompt_logprobs"] = prompt_logprobs_[i / request_.params.n];
      }
    }
    choices.push_back(std::move(choice_json));
  }
  json response = {{"id", id_},           {"object", chat ? "chat.completion" : "text_completion"},
                   {"created", created_}, {"model", model_.model_name()},
                   {"choices", choices},  {"usage", usage_json()}};
  if (chat && request_.params.prompt_logprobs >= 0)
    response["prompt_logprobs"] = prompt_logprobs_[0];
  return response;
}

}  // namespace sieve::server
