#include "server/grpc_request.h"

#include "engine/input_processor.h"
#include "server/openai_request.h"

namespace sieve::server {

using nlohmann::json;

namespace {

// `depth` counts the Structs and lists around `v`.
StatusOr<json> value_to_json(const google::protobuf::Value& v, const std::string& key, int depth);

StatusOr<json> struct_to_json_at(const google::protobuf::Struct& value, const std::string& key,
                                 int depth) {
  if (depth >= kMaxJsonDepth) {
    return InvalidArgumentError(key + ": nests structs and lists deeper than " +
                                std::to_string(kMaxJsonDepth) + " levels");
  }
  json out = json::object();
  for (const auto& [name, v] : value.fields()) {
    ASSIGN_OR_RETURN(out[name], value_to_json(v, key, depth + 1));
  }
  return out;
}

StatusOr<json> value_to_json(const google::protobuf::Value& v, const std::string& key, int depth) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNullValue:
      return nullptr;
    case google::protobuf::Value::kNumberValue:
      return v.number_value();
    case google::protobuf::Value::kStringValue:
      return v.string_value();
    case google::protobuf::Value::kBoolValue:
      return v.bool_value();
    case google::protobuf::Value::kStructValue:
      return struct_to_json_at(v.struct_value(), key, depth);
    case google::protobuf::Value::kListValue: {
      if (depth >= kMaxJsonDepth) {
        return InvalidArgumentError(key + ": nests structs and lists deeper than " +
                                    std::to_string(kMaxJsonDepth) + " levels");
      }
      json list = json::array();
      for (const auto& item : v.list_value().values()) {
        ASSIGN_OR_RETURN(json element, value_to_json(item, key, depth + 1));
        list.push_back(std::move(element));
      }
      return list;
    }
    case google::protobuf::Value::KIND_NOT_SET:
      return nullptr;
  }
  return nullptr;
}

json chat_to_json(const v1::ChatMessages& chat) {
  json messages = json::array();
  for (const v1::ChatMessage& m : chat.messages()) {
    messages.push_back({{"role", m.role()}, {"content", m.content()}});
  }
  return messages;
}

Status read_sampling(const v1::SamplingParams& s, engine::SamplingParams* p) {
  if (s.has_temperature()) p->temperature = s.temperature();
  if (s.has_top_p()) p->top_p = s.top_p();
  if (s.has_top_k()) p->top_k = s.top_k();
  if (s.has_min_p()) p->min_p = s.min_p();
  if (s.has_seed()) p->seed = s.seed();
  if (s.has_max_tokens()) p->max_tokens = s.max_tokens();
  if (s.has_min_tokens()) p->min_tokens = s.min_tokens();
  p->ignore_eos = s.ignore_eos();
  for (int32_t id : s.stop_token_ids()) p->stop_token_ids.push_back(id);
  for (const std::string& stop : s.stop()) p->stop.push_back(stop);
  p->include_stop_str_in_output = s.include_stop_str_in_output();
  if (s.has_repetition_penalty()) p->repetition_penalty = s.repetition_penalty();
  if (s.has_presence_penalty()) p->presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) p->frequency_penalty = s.frequency_penalty();
  if (s.has_n()) p->n = s.n();
  if (s.has_logprobs()) p->logprobs = s.logprobs();
  if (s.has_prompt_logprobs()) p->prompt_logprobs = s.prompt_logprobs();
  if (s.has_skip_special_tokens()) p->skip_special_tokens = s.skip_special_tokens();
  for (int32_t id : p->stop_token_ids) {
    if (id < 0)
      return InvalidArgumentError("stop_token_ids: " + std::to_string(id) + " is negative");
  }
  return engine::validate(*p);
}

// The proto's compression message through the one parser both APIs share.
Status read_compression(const v1::GenerateRequest& request, const ModelContext& model,
                        engine::Request* r) {
  if (!request.has_compression()) {
    r->compression = engine_compression(model.default_compression);
    return OkStatus();
  }
  const v1::Compression& c = request.compression();
  json object = json::object();
  if (!c.method().empty()) object["method"] = c.method();
  if (c.has_budget()) object["budget"] = c.budget();
  if (c.has_keep_ratio()) object["keep_ratio"] = c.keep_ratio();
  if (!c.kv_format().empty()) object["kv_format"] = c.kv_format();
  if (c.has_fair_eviction()) object["fair_eviction"] = c.fair_eviction();
  if (c.segments_size() > 0) {
    json segments = json::array();
    for (const v1::Segment& s : c.segments()) segments.push_back({s.begin(), s.end()});
    object["segments"] = std::move(segments);
  }
  if (c.has_params()) {
    ASSIGN_OR_RETURN(object["params"], struct_to_json(c.params(), "compression.params"));
  }
  ASSIGN_OR_RETURN(const CompressionSpec spec, parse_compression(object));
  r->compression = engine_compression(spec);
  return OkStatus();
}

StatusOr<std::vector<int32_t>> checked_ids(const google::protobuf::RepeatedField<int32_t>& ids,
                                           const char* key, const ModelContext& model) {
  std::vector<int32_t> out;
  for (int i = 0; i < ids.size(); ++i) {
    RETURN_IF_ERROR(engine::check_token_id(ids[i], i, model.config.vocab_size, key));
    out.push_back(ids[i]);
  }
  return out;
}

}  // namespace

StatusOr<json> struct_to_json(const google::protobuf::Struct& value, const std::string& key) {
  return struct_to_json_at(value, key, 0);
}

StatusOr<engine::Request> request_from_proto(const v1::GenerateRequest& request,
                                             const ModelContext& model) {
  if (!model.serves(request.model())) {
    return InvalidArgumentError("model: '" + request.model() + "' is not served here (serving '" +
                                model.model_name() + "')");
  }
  engine::Request r;
  apply_generation_defaults(model.generation_defaults, &r.params);
  RETURN_IF_ERROR(read_sampling(request.sampling(), &r.params));
  RETURN_IF_ERROR(read_compression(request, model, &r));
  const bool add_special_tokens =
      request.has_add_special_tokens() ? request.add_special_tokens() : true;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      if (!model.tokenizer) {
        return InvalidArgumentError("text: the model has no tokenizer; send token_ids instead");
      }
      r.prompt_token_ids = model.tokenizer->encode(request.text(), add_special_tokens);
      break;
    case v1::GenerateRequest::kTokenIds: {
      ASSIGN_OR_RETURN(r.prompt_token_ids,
                       checked_ids(request.token_ids().ids(), "token_ids", model));
      break;
    }
    case v1::GenerateRequest::kChat: {
      const v1::ChatMessages& chat = request.chat();
      const bool add_generation_prompt =
          chat.has_add_generation_prompt() ? chat.add_generation_prompt() : true;
      const json messages = chat_to_json(chat);
      ASSIGN_OR_RETURN(r.prompt_token_ids, encode_chat(messages, model, add_generation_prompt));
      r.system_prompt_tokens = system_prompt_length(messages, model, r.prompt_token_ids);
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return InvalidArgumentError("prompt: required (text, token_ids or chat)");
  }
  RETURN_IF_ERROR(engine::check_request(r, model.input_limits()));
  return r;
}

StatusOr<std::vector<int32_t>> tokenize_from_proto(const v1::TokenizeRequest& request,
                                                   const ModelContext& model) {
  if (!model.serves(request.model())) {
    return InvalidArgumentError("model: '" + request.model() + "' is not served here");
  }
  if (!model.tokenizer) return InvalidArgumentError("the model has no tokenizer");
  switch (request.input_case()) {
    case v1::TokenizeRequest::kText:
      return model.tokenizer->encode(
          request.text(), request.has_add_special_tokens() ? request.add_special_tokens() : true);
    case v1::TokenizeRequest::kChat: {
      const bool add_generation_prompt = request.chat().has_add_generation_prompt()
                                             ? request.chat().add_generation_prompt()
                                             : true;
      return encode_chat(chat_to_json(request.chat()), model, add_generation_prompt);
    }
    case v1::TokenizeRequest::INPUT_NOT_SET:
      return InvalidArgumentError("input: required (text or chat)");
  }
  return InvalidArgumentError("input: required (text or chat)");
}

void output_to_proto(const engine::RequestOutput& out, v1::GenerateResponse* response) {
  response->set_index(out.index);
  for (int32_t id : out.token_ids) response->add_token_ids(id);
  response->set_text(out.text);
  auto add = [](const engine::TokenLogprob& lp, v1::TokenLogprob* p) {
    p->set_token_id(lp.token_id);
    p->set_logprob(lp.logprob);
    for (const auto& [id, logprob] : lp.top) {
      v1::TopLogprob* top = p->add_top();
      top->set_token_id(id);
      top->set_logprob(logprob);
    }
  };
  for (const engine::TokenLogprob& lp : out.logprobs) add(lp, response->add_logprobs());
  for (const engine::TokenLogprob& lp : out.prompt_logprobs)
    add(lp, response->add_prompt_logprobs());
  if (out.finish_reason) response->set_finish_reason(*out.finish_reason);
  response->set_error(out.error);
  if (out.finished_request) {
    response->set_finished(true);
    v1::Usage* usage = response->mutable_usage();
    usage->set_prompt_tokens(out.usage.prompt_tokens);
    usage->set_completion_tokens(out.usage.completion_tokens);
    usage->set_cached_prompt_tokens(out.usage.cached_prompt_tokens);
    usage->set_kv_tokens_kept(out.usage.kv_tokens_kept);
    usage->set_kv_bytes(out.usage.kv_bytes);
  }
}

grpc::Status to_grpc(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace sieve::server
