// libFuzzer target over the OpenAI request parsers: the input is a request body, parsed as JSON
// and read as /v1/completions, /v1/chat/completions and /tokenize would read it. Whatever the
// bytes, each parser gives a request or an INVALID_ARGUMENT naming the problem: never a crash,
// a hang, an ASan or UBSan report, or another error code. A valid generation request has
// non-empty prompts of in-vocabulary ids that fit the context with max_tokens, and sampling
// parameters the engine accepts. (http_fuzz reaches the same parsers behind HTTP framing; this
// target's inputs are bare JSON, so the seeds and the dictionary work on them directly.)
//
// Build and run (clang; see fuzz/README.md):
//   cmake --build build-fuzz -j2 --target openai_request_fuzz
//   build-fuzz/fuzz/openai_request_fuzz -dict=fuzz/dict/openai.dict -max_len=8192 \
//       -rss_limit_mb=2048 -timeout=10 /tmp/openai_corpus fuzz/corpus/openai_request

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/check.h"
#include "fuzz/fuzz_model_context.h"
#include "server/openai_request.h"

namespace {

using sieve::Status;

sieve::server::ModelContext* g_model = nullptr;

void check_invalid(const Status& status) {
  SIEVE_CHECK(status.code() == absl::StatusCode::kInvalidArgument) << status;
  SIEVE_CHECK(!status.message().empty());
  SIEVE_CHECK(sieve::server::api_error_from(status).http_status == 400) << status;
}

void check_generation(const sieve::StatusOr<sieve::server::GenerationRequest>& request) {
  if (!request.ok()) return check_invalid(request.status());
  SIEVE_CHECK(!request->prompts.empty());
  for (const auto& prompt : request->prompts) {
    SIEVE_CHECK(!prompt.empty());
    SIEVE_CHECK(static_cast<int64_t>(prompt.size()) + request->params.max_tokens <=
                g_model->max_model_len);
    for (int32_t id : prompt) SIEVE_CHECK(id >= 0 && id < g_model->config.vocab_size) << id;
  }
  SIEVE_CHECK(sieve::engine::validate(request->params).ok());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_model = sieve::fuzz::make_fuzz_model_context();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  auto json = sieve::server::parse_json_body(body);
  if (!json.ok()) return check_invalid(json.status()), 0;
  check_generation(sieve::server::parse_completion_request(*json, *g_model));
  check_generation(sieve::server::parse_chat_request(*json, *g_model));
  auto ids = sieve::server::parse_tokenize_request(*json, *g_model);
  if (!ids.ok()) {
    check_invalid(ids.status());
  } else {
    for (int32_t id : *ids) SIEVE_CHECK(id >= 0 && id < g_model->config.vocab_size) << id;
  }
  return 0;
}
