// OpenAI request bodies -> engine requests: what valid bodies become, and that every bad input
// the issue lists is an INVALID_ARGUMENT whose OpenAI error names the field.

#include "server/openai_request.h"

#include <gtest/gtest.h>

#include "core/field_error.h"
#include "tests/server/server_test_util.h"

namespace sieve::server {
namespace {

using nlohmann::json;
using testing::default_model;

StatusOr<GenerationRequest> completion(const std::string& body) {
  ASSIGN_OR_RETURN(json parsed, parse_json_body(body));
  return parse_completion_request(parsed, default_model());
}

StatusOr<GenerationRequest> chat(const std::string& body) {
  ASSIGN_OR_RETURN(json parsed, parse_json_body(body));
  return parse_chat_request(parsed, default_model());
}

TEST(OpenAiRequest, TextPromptIsEncodedWithSpecialTokensAndOpenAiDefaults) {
  auto r = completion(R"({"model": "smol", "prompt": "Hello world"})");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->prompts.size(), 1u);
  EXPECT_EQ(r->prompts[0], default_model().tokenizer->encode("Hello world", true));
  EXPECT_EQ(r->params.max_tokens, 16);
  EXPECT_FLOAT_EQ(r->params.temperature, 1.0f);
  EXPECT_FALSE(r->stream);
}

TEST(OpenAiRequest, PromptsAsTokenIdsAndListsOfEither) {
  auto ids = completion(R"({"prompt": [1, 2, 3]})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->prompts, (std::vector<std::vector<int32_t>>{{1, 2, 3}}));
  auto lists = completion(R"({"prompt": [[1, 2], [3]]})");
  ASSERT_TRUE(lists.ok()) << lists.status();
  EXPECT_EQ(lists->prompts, (std::vector<std::vector<int32_t>>{{1, 2}, {3}}));
  auto texts = completion(R"({"prompt": ["a", "b c"]})");
  ASSERT_TRUE(texts.ok()) << texts.status();
  ASSERT_EQ(texts->prompts.size(), 2u);
  EXPECT_EQ(texts->prompts[1], default_model().tokenizer->encode("b c", true));
}

TEST(OpenAiRequest, SamplingFieldsOpenAiAndVllmNames) {
  auto r = completion(R"({"prompt": "x", "max_tokens": 5, "temperature": 0.5, "top_p": 0.9,
      "top_k": 40, "min_p": 0.1, "n": 3, "seed": 7, "stop": ["a", "b"], "logprobs": 2,
      "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1,
      "min_tokens": 2, "ignore_eos": true, "stop_token_ids": [5], "skip_special_tokens": false,
      "include_stop_str_in_output": true, "stream": true,
      "stream_options": {"include_usage": true}, "user": "ignored", "best_of": 3})");
  ASSERT_TRUE(r.ok()) << r.status();
  const engine::SamplingParams& p = r->params;
  EXPECT_EQ(p.max_tokens, 5);
  EXPECT_FLOAT_EQ(p.temperature, 0.5f);
  EXPECT_FLOAT_EQ(p.top_p, 0.9f);
  EXPECT_EQ(p.top_k, 40);
  EXPECT_FLOAT_EQ(p.min_p, 0.1f);
  EXPECT_EQ(p.n, 3);
  EXPECT_EQ(p.seed, 7u);
  EXPECT_EQ(p.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(p.logprobs, 2);
  EXPECT_EQ(p.min_tokens, 2);
  EXPECT_TRUE(p.ignore_eos);
  EXPECT_EQ(p.stop_token_ids, std::vector<int32_t>{5});
  EXPECT_FALSE(p.skip_special_tokens);
  EXPECT_TRUE(p.include_stop_str_in_output);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
}

TEST(OpenAiRequest, ChatRendersTheTemplateAndDefaultsToTheRestOfTheContext) {
  auto r = chat(R"({"messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                    "logprobs": true, "top_logprobs": 3})");
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<models::ChatMessage> messages = {{"system", "Be brief."}, {"user", "Hi"}};
  auto text = models::apply_chat_template(default_model().chat_template, messages, true);
  ASSERT_TRUE(text.ok());
  ASSERT_EQ(r->prompts.size(), 1u);
  EXPECT_EQ(r->prompts[0], default_model().tokenizer->encode(*text, false));
  EXPECT_EQ(r->params.max_tokens,
            default_model().max_model_len - static_cast<int>(r->prompts[0].size()));
  EXPECT_EQ(r->params.logprobs, 3);
  auto limited = chat(R"({"messages": [{"role": "user", "content": "Hi"}],
                          "max_completion_tokens": 4})");
  ASSERT_TRUE(limited.ok()) << limited.status();
  EXPECT_EQ(limited->params.max_tokens, 4);
}

TEST(OpenAiRequest, CompressionObjectIsParsed) {
  auto r = completion(R"({"prompt": "x", "compression": {"method": "none", "kv_format": "f32"}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->compression.method, "none");
  EXPECT_EQ(r->compression.kv_format, "f32");
}

struct BadCase {
  const char* name;
  bool chat;
  std::string body;
  const char* param;  // expected OpenAI error param ("" = null)
};

// ctest shows the case's name, not its bytes.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class OpenAiBadInput : public ::testing::TestWithParam<BadCase> {};

TEST_P(OpenAiBadInput, IsA400NamingTheField) {
  const BadCase& c = GetParam();
  auto r = c.chat ? chat(c.body) : completion(c.body);
  ASSERT_FALSE(r.ok()) << c.body;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  const ApiError e = api_error_from(r.status());
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.param, c.param) << e.message;
  // The field travels with the error as data, not only as the message's first word (the
  // compression object's too, parsed in kvcache/policies).
  EXPECT_EQ(error_field(r.status()), c.param) << e.message;
  EXPECT_FALSE(e.message.empty());
  const json j = e.to_json();
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(j["error"].contains("code"));
}

const std::string kLongText = [] {
  std::string s;
  for (int i = 0; i < 400; ++i) s += "word ";
  return s;
}();

INSTANTIATE_TEST_SUITE_P(
    Cases, OpenAiBadInput,
    ::testing::Values(
        BadCase{"malformed_json", false, R"({"prompt": "x",)", ""},
        BadCase{"not_an_object", false, R"([1, 2])", ""},
        BadCase{"invalid_utf8", false, "{\"prompt\": \"\xC3\x28\"}", ""},
        BadCase{"missing_prompt", false, R"({"max_tokens": 3})", "prompt"},
        BadCase{"prompt_wrong_type", false, R"({"prompt": 3})", "prompt"},
        BadCase{"prompt_empty_list", false, R"({"prompt": []})", "prompt"},
        BadCase{"prompt_mixed_list", false, R"({"prompt": [1, "a"]})", "prompt"},
        BadCase{"prompt_too_long", false, R"({"prompt": ")" + kLongText + R"("})", "prompt"},
        BadCase{"token_id_negative", false, R"({"prompt": [1, -1]})", "prompt"},
        BadCase{"token_id_past_vocab", false, R"({"prompt": [49152]})", "prompt"},
        BadCase{"max_tokens_zero", false, R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
        BadCase{"max_tokens_past_context", false, R"({"prompt": "x", "max_tokens": 1000})",
                "max_tokens"},
        BadCase{"max_tokens_string", false, R"({"prompt": "x", "max_tokens": "5"})", "max_tokens"},
        BadCase{"max_tokens_fraction", false, R"({"prompt": "x", "max_tokens": 2.5})",
                "max_tokens"},
        BadCase{"max_tokens_huge", false, R"({"prompt": "x", "max_tokens": 1e30})", "max_tokens"},
        BadCase{"temperature_negative", false, R"({"prompt": "x", "temperature": -1})",
                "temperature"},
        BadCase{"temperature_string", false, R"({"prompt": "x", "temperature": "hot"})",
                "temperature"},
        BadCase{"top_p_zero", false, R"({"prompt": "x", "top_p": 0})", "top_p"},
        BadCase{"top_p_above_one", false, R"({"prompt": "x", "top_p": 1.5})", "top_p"},
        BadCase{"top_k_below_minus_one", false, R"({"prompt": "x", "top_k": -2})", "top_k"},
        BadCase{"n_zero", false, R"({"prompt": "x", "n": 0})", "n"},
        BadCase{"n_bool", false, R"({"prompt": "x", "n": true})", "n"},
        BadCase{"logprobs_too_many", false, R"({"prompt": "x", "logprobs": 21})", "logprobs"},
        BadCase{"logprobs_bool_for_completions", false, R"({"prompt": "x", "logprobs": true})",
                "logprobs"},
        BadCase{"seed_string", false, R"({"prompt": "x", "seed": "1"})", "seed"},
        BadCase{"stop_number", false, R"({"prompt": "x", "stop": 3})", "stop"},
        BadCase{"stop_empty_string", false, R"({"prompt": "x", "stop": [""]})", "stop"},
        BadCase{"stream_string", false, R"({"prompt": "x", "stream": "yes"})", "stream"},
        BadCase{"stream_options_without_stream", false,
                R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options"},
        BadCase{"include_usage_string", false,
                R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": 1}})",
                "stream_options.include_usage"},
        BadCase{"unknown_model", false, R"({"model": "gpt-9", "prompt": "x"})", "model"},
        BadCase{"model_number", false, R"({"model": 5, "prompt": "x"})", "model"},
        BadCase{"best_of_not_n", false, R"({"prompt": "x", "best_of": 2})", "best_of"},
        BadCase{"logit_bias", false, R"({"prompt": "x", "logit_bias": {"5": 1}})", "logit_bias"},
        BadCase{"echo_with_logprobs", false, R"({"prompt": "x", "echo": true, "logprobs": 1})",
                "echo"},
        BadCase{"compression_unknown_method", false,
                R"({"prompt": "x", "compression": {"method": "magic"}})", "compression.method"},
        BadCase{"compression_unknown_field", false,
                R"({"prompt": "x", "compression": {"method": "none", "ratio": 2}})",
                "compression.ratio"},
        BadCase{"compression_unknown_param", false,
                R"({"prompt": "x", "compression": {"method": "none", "params": {"window": 4}}})",
                "compression.params.window"},
        BadCase{"compression_budget_zero", false,
                R"({"prompt": "x", "compression": {"method": "none", "budget": 0}})",
                "compression.budget"},
        BadCase{"compression_keep_ratio_range", false,
                R"({"prompt": "x", "compression": {"method": "none", "keep_ratio": 1.5}})",
                "compression.keep_ratio"},
        BadCase{"compression_bad_format", false,
                R"({"prompt": "x", "compression": {"kv_format": "int3"}})",
                "compression.kv_format"},
        BadCase{"compression_not_object", false, R"({"prompt": "x", "compression": "none"})",
                "compression"},
        BadCase{"missing_messages", true, R"({"model": "smol"})", "messages"},
        BadCase{"messages_empty", true, R"({"messages": []})", "messages"},
        BadCase{"messages_not_list", true, R"({"messages": "hi"})", "messages"},
        BadCase{"unknown_role", true, R"({"messages": [{"role": "wizard", "content": "x"}]})",
                "messages[0].role"},
        BadCase{"missing_role", true, R"({"messages": [{"content": "x"}]})", "messages[0].role"},
        BadCase{"content_number", true, R"({"messages": [{"role": "user", "content": 5}]})",
                "messages[0].content"},
        BadCase{"image_part", true,
                R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
                "messages[0].content[0]"},
        BadCase{"chat_prompt_too_long", true,
                R"({"messages": [{"role": "user", "content": ")" + kLongText + R"("}]})",
                "messages"},
        BadCase{"chat_max_completion_tokens_past_context", true,
                R"({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 999})",
                "max_completion_tokens"},
        BadCase{"top_logprobs_without_logprobs", true,
                R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})",
                "top_logprobs"},
        BadCase{"top_logprobs_too_many", true,
                R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
                    "top_logprobs": 21})",
                "top_logprobs"},
        BadCase{"chat_logprobs_int", true,
                R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 2})", "logprobs"},
        BadCase{"tools", true,
                R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "f"}]})",
                "tools"},
        BadCase{"response_format_json", true,
                R"({"messages": [{"role": "user", "content": "x"}],
                    "response_format": {"type": "json_object"}})",
                "response_format"}),
    [](const ::testing::TestParamInfo<BadCase>& p) { return std::string(p.param.name); });

TEST(OpenAiRequest, TokenizeAndDetokenizeBodies) {
  auto ids = parse_tokenize_request(json{{"prompt", "Hello"}}, default_model());
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, default_model().tokenizer->encode("Hello", true));
  auto chat_ids = parse_tokenize_request(
      json{{"messages", {{{"role", "user"}, {"content", "Hi"}}}}}, default_model());
  ASSERT_TRUE(chat_ids.ok()) << chat_ids.status();
  EXPECT_GT(chat_ids->size(), ids->size());
  auto back = parse_detokenize_request(json{{"tokens", *ids}}, default_model());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, *ids);
  auto bad = parse_detokenize_request(json{{"tokens", {1, 99999999}}}, default_model());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(api_error_from(bad.status()).param, "tokens");
}

// api_error_from takes `param` from the error's field, whatever its message says.
TEST(ApiError, ParamIsTheFieldTheErrorCarries) {
  EXPECT_EQ(api_error_from(InvalidFieldError("n", "too many samples for this server")).param, "n");
  EXPECT_EQ(api_error_from(InvalidFieldError("messages[1].role", "unknown role")).param,
            "messages[1].role");
  // Without one, the message's leading field, as before.
  EXPECT_EQ(api_error_from(InvalidArgumentError("top_p: must be in (0, 1]")).param, "top_p");
  EXPECT_EQ(api_error_from(InvalidArgumentError("something else went wrong")).param, "");
}

std::string nested(const std::string& open, const std::string& close, int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += open;
  s += "1";
  for (int i = 0; i < depth; ++i) s += close;
  return s;
}

// The crash of issue 12: a deep value anywhere (here compression.params, 60000 levels) was
// copied recursively on an I/O thread. The parser refuses nesting past the limit.
TEST(OpenAiRequest, JsonNestedPastTheLimitIsRefusedWhileParsing) {
  const std::string deep = nested("{\"a\":", "}", 60000);
  auto r = parse_json_body(R"({"prompt": "Hi", "compression": {"method": "none", "params": )" +
                           deep + "}}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("deeper than 64 levels"), std::string::npos) << r.status();
  EXPECT_FALSE(parse_json_body(R"({"a": )" + nested("[", "]", 100000) + "}").ok());
  // The whole body counts: 64 levels in all are fine, 65 are not.
  EXPECT_TRUE(parse_json_body(R"({"a": )" + nested("[", "]", kMaxJsonDepth - 1) + "}").ok());
  EXPECT_FALSE(parse_json_body(R"({"a": )" + nested("[", "]", kMaxJsonDepth) + "}").ok());
}

// Checks that compare a nested field ("type") against a string look at that field only.
TEST(OpenAiRequest, ContentPartsAndResponseFormatOfOtherShapesAreRefused) {
  for (const char* body :
       {R"({"messages": [{"role": "user", "content": [{"type": ["text"], "text": "x"}]}]})",
        R"({"messages": [{"role": "user", "content": [["text"]]}]})",
        R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": {}}})",
        R"({"messages": [{"role": "user", "content": "x"}], "response_format": "text"})"}) {
    auto r = chat(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
  }
  EXPECT_TRUE(chat(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                       "response_format": {"type": "text"}})")
                  .ok());
}

// max_tokens at INT32_MAX once overflowed prompt_len + max_tokens and skipped the check.
TEST(OpenAiRequest, MaxTokensAtTheIntLimitIsA400NamingIt) {
  for (const char* body : {R"({"prompt": "Hi", "max_tokens": 2147483647})",
                           R"({"prompt": "Hi", "max_tokens": 2147483646})",
                           R"({"prompt": "Hi", "max_completion_tokens": 2147483647})"}) {
    auto r = completion(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(api_error_from(r.status()).param, "max_tokens") << r.status();
  }
  auto c = chat(R"({"messages": [{"role": "user", "content": "x"}],
                    "max_completion_tokens": 2147483647})");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(api_error_from(c.status()).param, "max_completion_tokens") << c.status();
  auto past_int = completion(R"({"prompt": "Hi", "max_tokens": 2147483648})");
  ASSERT_FALSE(past_int.ok());
  EXPECT_EQ(api_error_from(past_int.status()).param, "max_tokens") << past_int.status();
}

TEST(OpenAiRequest, ErrorCodesMapToHttpStatuses) {
  EXPECT_EQ(api_error_from(ResourceExhaustedError("full")).http_status, 503);
  EXPECT_EQ(api_error_from(absl::UnauthenticatedError("key")).http_status, 401);
  EXPECT_EQ(api_error_from(absl::UnavailableError("down")).http_status, 503);
  EXPECT_EQ(api_error_from(InternalError("bug")).http_status, 500);
  EXPECT_EQ(api_error_from(UnimplementedError("prompt_logprobs: no")).http_status, 400);
  // A message that does not start with a field has no param.
  EXPECT_EQ(api_error_from(InvalidArgumentError("something: went wrong")).param, "");
}

TEST(Utf8, AcceptsWellFormedAndRejectsOverlongsSurrogatesAndTruncation) {
  EXPECT_TRUE(is_valid_utf8("plain"));
  EXPECT_TRUE(is_valid_utf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"));  // é € 😀
  EXPECT_FALSE(is_valid_utf8("\xC0\x80"));                             // overlong NUL
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));                         // surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));                     // past U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xE2\x82"));                             // truncated
  EXPECT_FALSE(is_valid_utf8("\xFF"));
}

}  // namespace
}  // namespace sieve::server
