// Engine outputs -> OpenAI's wire format: SSE chunks (chat's role chunk first, usage chunk and
// [DONE] last), the final body for several prompts and samples, and the logprobs shapes.

#include "server/openai_response.h"

#include <gtest/gtest.h>

#include "tests/server/server_test_util.h"

namespace sieve::server {
namespace {

using nlohmann::json;
using testing::default_model;

engine::RequestOutput output(int index, std::vector<int32_t> ids, std::string text) {
  engine::RequestOutput out;
  out.index = index;
  out.token_ids = std::move(ids);
  out.text = std::move(text);
  return out;
}

engine::RequestOutput finish(int index, const char* reason, int prompt_tokens, int completion) {
  engine::RequestOutput out;
  out.index = index;
  out.finish_reason = reason;
  out.finished_request = true;
  out.usage.prompt_tokens = prompt_tokens;
  out.usage.completion_tokens = completion;
  out.usage.cached_prompt_tokens = 1;
  out.usage.kv_tokens_kept = prompt_tokens + completion - 1;
  out.usage.kv_bytes = 4096;
  return out;
}

// The JSON payloads of "data: ..." events, and whether the stream ended with [DONE].
std::vector<json> events(const std::string& sse, bool* done) {
  std::vector<json> out;
  *done = false;
  size_t pos = 0;
  while ((pos = sse.find("data: ", pos)) != std::string::npos) {
    const size_t end = sse.find("\n\n", pos);
    const std::string payload = sse.substr(pos + 6, end - pos - 6);
    if (payload == "[DONE]") {
      *done = true;
    } else {
      out.push_back(json::parse(payload));
    }
    pos = end;
  }
  return out;
}

TEST(OpenAiResponse, ChatStreamStartsWithTheRoleAndEndsWithUsageAndDone) {
  GenerationRequest request;
  request.endpoint = Endpoint::kChatCompletions;
  request.prompts = {{1, 2, 3}};
  request.stream = true;
  request.include_usage = true;
  OpenAiResponder responder(request, default_model(), "chatcmpl-1", 100);
  std::string sse = responder.stream_chunk(0, output(0, {5}, "Hel"));
  sse += responder.stream_chunk(0, output(0, {6}, ""));  // nothing to say: no event
  sse += responder.stream_chunk(0, output(0, {7}, "lo"));
  sse += responder.stream_chunk(0, finish(0, "stop", 3, 3));
  sse += responder.stream_end();
  bool done = false;
  const std::vector<json> chunks = events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(chunks.size(), 5u);
  EXPECT_EQ(chunks[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(chunks[1]["choices"][0]["delta"]["content"], "Hel");
  EXPECT_EQ(chunks[2]["choices"][0]["delta"]["content"], "lo");
  EXPECT_EQ(chunks[3]["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(chunks[3]["choices"][0]["delta"].empty());
  EXPECT_TRUE(chunks[4]["choices"].empty());
  EXPECT_EQ(chunks[4]["usage"]["total_tokens"], 6);
  EXPECT_EQ(chunks[4]["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
  EXPECT_EQ(chunks[4]["usage"]["kv_tokens_kept"], 5);
  EXPECT_EQ(chunks[4]["usage"]["kv_bytes"], 4096);
  for (const json& c : chunks) EXPECT_EQ(c["id"], "chatcmpl-1");
}

TEST(OpenAiResponse, CompletionsOfSeveralPromptsAndSamplesNumberTheirChoices) {
  GenerationRequest request;
  request.prompts = {{1}, {2, 3}};
  request.params.n = 2;
  request.echo_texts = {"A", "B"};
  OpenAiResponder responder(request, default_model(), "cmpl-1", 100);
  responder.collect(1, output(1, {9}, " y"));
  responder.collect(0, output(0, {9}, " x"));
  responder.collect(0, output(1, {9}, " z"));
  responder.collect(1, output(0, {9}, " w"));
  responder.collect(0, finish(1, "length", 1, 2));
  responder.collect(1, finish(0, "stop", 2, 2));
  const json body = responder.final_response();
  EXPECT_EQ(body["object"], "text_completion");
  ASSERT_EQ(body["choices"].size(), 4u);
  EXPECT_EQ(body["choices"][0]["text"], "A x");
  EXPECT_EQ(body["choices"][1]["text"], "A z");
  EXPECT_EQ(body["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(body["choices"][2]["text"], "B w");
  EXPECT_EQ(body["choices"][3]["text"], "B y");
  EXPECT_EQ(body["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(body["usage"]["completion_tokens"], 4);
  EXPECT_EQ(body["usage"]["kv_tokens_kept"], (1 + 2 - 1) + (2 + 2 - 1));  // summed over prompts
  EXPECT_EQ(body["usage"]["kv_bytes"], 2 * 4096);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(body["choices"][i]["index"], i);
}

TEST(OpenAiResponse, LogprobsInTheCompletionsAndChatShapes) {
  const models::Tokenizer& tok = *default_model().tokenizer;
  const std::vector<int32_t> ids = tok.encode(" hello world", false);
  ASSERT_GE(ids.size(), 2u);
  engine::RequestOutput out = output(0, {ids[0]}, " hello");
  out.logprobs.push_back({ids[0], -0.5f, {{ids[0], -0.5f}, {ids[1], -1.5f}}});

  GenerationRequest completions;
  completions.prompts = {{1}};
  completions.params.logprobs = 1;
  OpenAiResponder c(completions, default_model(), "cmpl", 0);
  c.collect(0, out);
  c.collect(0, finish(0, "length", 1, 1));
  const json lp = c.final_response()["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"][0], " hello");
  EXPECT_FLOAT_EQ(lp["token_logprobs"][0].get<float>(), -0.5f);
  EXPECT_FLOAT_EQ(lp["top_logprobs"][0][" world"].get<float>(), -1.5f);
  EXPECT_EQ(lp["text_offset"][0], 0);

  GenerationRequest chat = completions;
  chat.endpoint = Endpoint::kChatCompletions;
  chat.stream = true;
  OpenAiResponder s(chat, default_model(), "chat", 0);
  bool done = false;
  const std::vector<json> chunks = events(s.stream_chunk(0, out), &done);
  ASSERT_EQ(chunks.size(), 2u);
  const json content = chunks[1]["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(content["token"], " hello");
  EXPECT_EQ(content["bytes"], json({32, 104, 101, 108, 108, 111}));
  EXPECT_EQ(content["top_logprobs"][1]["token"], " world");
}

TEST(OpenAiResponse, AnEngineErrorBecomesAnErrorEvent) {
  ApiError e;
  e.http_status = 500;
  e.type = "internal_server_error";
  e.message = "boom";
  bool done = false;
  const std::vector<json> chunks = events(OpenAiResponder::stream_error(e), &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0]["error"]["message"], "boom");
}

}  // namespace
}  // namespace sieve::server
