#include "server/http_api.h"

#include <ctime>
#include <random>

#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "server/auth.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "spdlog/spdlog.h"

namespace sieve::server {

using nlohmann::json;

namespace {

std::string random_hex() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return fmt::format("{:016x}{:016x}", rng(), rng());
}

HttpReply error_reply(const ApiError& error) {
  return HttpServer::json_reply(error.http_status, error.to_json().dump());
}

// One generation call's response body: pulls the outputs of its engine requests and renders
// them as SSE events, or as one JSON body once all have finished.
class GenerationBody : public DeferredBody {
 public:
  GenerationBody(GenerationRequest request, std::vector<std::unique_ptr<TrackedRequest>> tracked,
                 const ModelContext& model, std::string id)
      : request_(std::move(request)),
        tracked_(std::move(tracked)),
        responder_(request_, model, std::move(id), static_cast<int64_t>(std::time(nullptr))) {}

  void start(std::function<void()> wake) override {
    for (auto& t : tracked_) t->set_listener(wake);
  }

  bool pull(std::string* out) override {
    bool complete = true;
    for (size_t i = 0; i < tracked_.size(); ++i) {
      while (auto output = tracked_[i]->next(std::chrono::milliseconds(0))) {
        if (request_.stream) {
          *out += responder_.stream_chunk(static_cast<int>(i), *output);
        } else {
          responder_.collect(static_cast<int>(i), *output);
        }
      }
      complete = complete && tracked_[i]->finished();
    }
    if (!complete) return false;
    if (request_.stream) {
      *out += responder_.error().empty() ? responder_.stream_end()
                                         : OpenAiResponder::stream_error(engine_error());
    } else if (!responder_.error().empty()) {
      status_ = 500;
      *out = engine_error().to_json().dump();
    } else {
      *out = responder_.final_response().dump(-1, ' ', false, json::error_handler_t::replace);
    }
    return true;
  }

  int status() const override { return status_; }

  void cancel() override {
    for (auto& t : tracked_) t->abort();
  }

 private:
  ApiError engine_error() const {
    ApiError e;
    e.http_status = 500;
    e.type = "internal_server_error";
    e.message = responder_.error();
    return e;
  }

  GenerationRequest request_;
  std::vector<std::unique_ptr<TrackedRequest>> tracked_;
  OpenAiResponder responder_;
  int status_ = 200;
};

class HttpApi {
 public:
  HttpApi(Frontend& frontend, HttpApiOptions options)
      : frontend_(frontend), options_(std::move(options)) {}

  HttpReply handle(const HttpRequest& r) {
    const std::string path = r.path();
    const bool get = r.method == "GET" || r.method == "HEAD";
    const bool post = r.method == "POST";
    if (path == "/health") return get ? health() : method_not_allowed();
    if (path == "/version") {
      return get ? HttpServer::json_reply(200, json{{"version", sieve_version()}}.dump())
                 : method_not_allowed();
    }
    if (path == "/metrics") {
      if (!get) return method_not_allowed();
      HttpReply reply;
      reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
      reply.body = frontend_.render_metrics();
      return reply;
    }
    const bool known = path == "/v1/models" || path == "/v1/completions" ||
                       path == "/v1/chat/completions" || path == "/tokenize" ||
                       path == "/detokenize";
    if (!known) return error(404, "not_found_error", "no route " + path);
    if (!is_authorized(r.header("authorization"), options_.api_key)) {
      frontend_.count_rejected("unauthenticated");
      return error_reply(api_error_from(absl::UnauthenticatedError(
          "missing or wrong API key: send 'Authorization: Bearer <key>'")));
    }
    if (path == "/v1/models") return get ? models() : method_not_allowed();
    if (!post) return method_not_allowed();
    auto body = parse_json_body(r.body);
    if (!body.ok()) return rejected(body.status());
    if (path == "/tokenize") return tokenize(*body);
    if (path == "/detokenize") return detokenize(*body);
    return generate(
        r, *body,
        path == "/v1/chat/completions" ? Endpoint::kChatCompletions : Endpoint::kCompletions);
  }

 private:
  HttpReply health() {
    if (frontend_.shutting_down()) return error(503, "service_unavailable_error", "shutting down");
    HttpReply reply;
    reply.content_type = "text/plain";
    return reply;
  }

  HttpReply models() {
    const ModelContext& m = frontend_.model();
    json data = json::array();
    for (const std::string& name : m.served_model_names) {
      data.push_back({{"id", name},
                      {"object", "model"},
                      {"created", created_},
                      {"owned_by", "sieve"},
                      {"root", m.source},
                      {"max_model_len", m.max_model_len}});
    }
    return HttpServer::json_reply(200, json{{"object", "list"}, {"data", data}}.dump());
  }

  HttpReply tokenize(const json& body) {
    auto ids = parse_tokenize_request(body, frontend_.model());
    if (!ids.ok()) return rejected(ids.status());
    json out = {{"count", ids->size()},
                {"max_model_len", frontend_.model().max_model_len},
                {"tokens", *ids}};
    return HttpServer::json_reply(200, out.dump());
  }

  HttpReply detokenize(const json& body) {
    auto ids = parse_detokenize_request(body, frontend_.model());
    if (!ids.ok()) return rejected(ids.status());
    const std::string text =
        frontend_.model().tokenizer->decode(*ids, /*skip_special_tokens=*/false);
    return HttpServer::json_reply(
        200, json{{"prompt", text}}.dump(-1, ' ', false, json::error_handler_t::replace));
  }

  HttpReply generate(const HttpRequest& r, const json& body, Endpoint endpoint) {
    auto request = endpoint == Endpoint::kChatCompletions
                       ? parse_chat_request(body, frontend_.model())
                       : parse_completion_request(body, frontend_.model());
    if (!request.ok()) return rejected(request.status());
    std::string id = clean_request_id(r.header("x-request-id"));
    if (id.empty()) {
      id = (endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-") + random_hex();
    }
    std::vector<engine::Request> engine_requests;
    for (const std::vector<int32_t>& prompt : request->prompts) {
      engine::Request e{prompt, request->params, engine_compression(request->compression),
                        request->system_prompt_tokens};
      engine_requests.push_back(std::move(e));
    }
    auto tracked = frontend_.submit(std::move(engine_requests), id, r.arrival);
    if (!tracked.ok()) return error_reply(api_error_from(tracked.status()));
    HttpReply reply;
    reply.headers.emplace_back("X-Request-Id", id);
    reply.stream = request->stream;
    reply.content_type = request->stream ? "text/event-stream; charset=utf-8" : "application/json";
    reply.deferred = std::make_shared<GenerationBody>(std::move(*request), std::move(*tracked),
                                                      frontend_.model(), id);
    return reply;
  }

  HttpReply rejected(const Status& status) {
    frontend_.count_rejected("invalid_argument");
    const ApiError e = api_error_from(status);
    SPDLOG_DEBUG("rejected: {}", e.message);
    return error_reply(e);
  }

  HttpReply error(int status, const char* type, const std::string& message) {
    ApiError e;
    e.http_status = status;
    e.type = type;
    e.message = message;
    return error_reply(e);
  }

  HttpReply method_not_allowed() {
    return error(405, "invalid_request_error", "method not allowed");
  }

  Frontend& frontend_;
  const HttpApiOptions options_;
  const int64_t created_ = static_cast<int64_t>(std::time(nullptr));
};

}  // namespace

HttpServer::Handler make_http_api(Frontend& frontend, HttpApiOptions options) {
  auto api = std::make_shared<HttpApi>(frontend, std::move(options));
  return [api](const HttpRequest& r) { return api->handle(r); };
}

}  // namespace sieve::server
