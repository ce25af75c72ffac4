// sieve.v1 messages <-> engine types: prompts of each kind, defaults, INVALID_ARGUMENT naming
// the field for every bad input, compression params from a protobuf Struct.

#include "server/grpc_request.h"

#include <gtest/gtest.h>

#include "server/openai_request.h"
#include "tests/server/server_test_util.h"

namespace sieve::server {
namespace {

using testing::default_model;

TEST(GrpcRequest, TextTokenIdsAndChatPrompts) {
  v1::GenerateRequest text;
  text.set_text("Hello");
  auto r = request_from_proto(text, default_model());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt_token_ids, default_model().tokenizer->encode("Hello", true));
  EXPECT_EQ(r->params.max_tokens, 16);  // vLLM's default
  EXPECT_FLOAT_EQ(r->params.temperature, 1.0f);

  v1::GenerateRequest ids;
  for (int32_t id : {4, 5, 6}) ids.mutable_token_ids()->add_ids(id);
  ids.mutable_sampling()->set_temperature(0);
  ids.mutable_sampling()->set_max_tokens(3);
  ids.mutable_sampling()->set_n(2);
  ids.mutable_sampling()->add_stop("\n");
  r = request_from_proto(ids, default_model());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt_token_ids, (std::vector<int32_t>{4, 5, 6}));
  EXPECT_FLOAT_EQ(r->params.temperature, 0.0f);
  EXPECT_EQ(r->params.max_tokens, 3);
  EXPECT_EQ(r->params.n, 2);
  EXPECT_EQ(r->params.stop, std::vector<std::string>{"\n"});

  v1::GenerateRequest chat;
  v1::ChatMessage* m = chat.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Hi");
  r = request_from_proto(chat, default_model());
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<models::ChatMessage> messages = {{"user", "Hi"}};
  auto rendered = models::apply_chat_template(default_model().chat_template, messages, true);
  EXPECT_EQ(r->prompt_token_ids, default_model().tokenizer->encode(*rendered, false));
}

TEST(GrpcRequest, BadInputsAreInvalidArgumentNamingTheField) {
  auto expect_bad = [](const v1::GenerateRequest& request, const std::string& field) {
    auto r = request_from_proto(request, default_model());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(to_grpc(r.status()).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(std::string(r.status().message()).rfind(field, 0), 0u) << r.status();
  };
  v1::GenerateRequest base;
  base.set_text("x");
  expect_bad(v1::GenerateRequest(), "prompt");
  v1::GenerateRequest r = base;
  r.set_model("other");
  expect_bad(r, "model");
  r = base;
  r.mutable_sampling()->set_top_p(0);
  expect_bad(r, "top_p");
  r = base;
  r.mutable_sampling()->set_max_tokens(1000);
  expect_bad(r, "max_tokens");
  r = base;
  r.mutable_sampling()->set_logprobs(50);
  expect_bad(r, "logprobs");
  r = v1::GenerateRequest();
  r.mutable_token_ids()->add_ids(-3);
  expect_bad(r, "token_ids");
  r = v1::GenerateRequest();
  r.mutable_chat()->add_messages()->set_role("tool");
  expect_bad(r, "messages[0].role");
  r = base;
  r.mutable_compression()->set_method("snapkv-2");
  expect_bad(r, "compression.method");
  r = base;
  (*r.mutable_compression()->mutable_params()->mutable_fields())["window"].set_number_value(8);
  expect_bad(r, "compression.params.window");
  r = base;
  r.mutable_compression()->set_keep_ratio(0);
  expect_bad(r, "compression.keep_ratio");
  r = base;
  r.mutable_compression()->set_fair_eviction(true);
  expect_bad(r, "compression.fair_eviction");  // with method none
  r = base;
  r.mutable_compression()->set_method("knorm");
  r.mutable_compression()->set_budget(8);
  v1::Segment* s = r.mutable_compression()->add_segments();
  s->set_begin(5);
  s->set_end(2);
  r.mutable_compression()->set_fair_eviction(true);
  expect_bad(r, "compression.segments");
}

// Fair eviction and its segments reach the engine's spec as the HTTP API's JSON would.
TEST(GrpcRequest, FairEvictionAndSegments) {
  v1::GenerateRequest r;
  r.set_text("Hello there");
  v1::Compression* c = r.mutable_compression();
  c->set_method("knorm");
  c->set_budget(64);
  c->set_fair_eviction(true);
  for (const auto& [begin, end] : {std::pair{0, 10}, std::pair{10, 30}}) {
    v1::Segment* s = c->add_segments();
    s->set_begin(begin);
    s->set_end(end);
  }
  auto request = request_from_proto(r, default_model());
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_NE(request->compression, nullptr);
  EXPECT_TRUE(request->compression->protection.fair_eviction);
  EXPECT_EQ(request->compression->protection.segments,
            (std::vector<std::pair<int, int>>{{0, 10}, {10, 30}}));
  c->clear_fair_eviction();
  EXPECT_FALSE(request_from_proto(r, default_model()).ok());  // segments without fair eviction
  c->clear_segments();
  request = request_from_proto(r, default_model());
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_FALSE(request->compression->protection.fair_eviction);
}

TEST(GrpcRequest, MaxTokensAtTheIntLimitIsInvalidArgumentNamingIt) {
  v1::GenerateRequest r;
  r.set_text("Hi");
  r.mutable_sampling()->set_max_tokens(2147483647);
  const auto request = request_from_proto(r, default_model());
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(std::string(request.status().message()).starts_with("max_tokens"))
      << request.status();
}

TEST(GrpcRequest, StructParamsBecomeJson) {
  google::protobuf::Struct s;
  auto& fields = *s.mutable_fields();
  fields["window"].set_number_value(32);
  fields["protect"].set_bool_value(true);
  fields["name"].set_string_value("x");
  fields["list"].mutable_list_value()->add_values()->set_number_value(1);
  const auto j = struct_to_json(s, "compression.params");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(*j,
            (nlohmann::json{{"window", 32.0}, {"protect", true}, {"name", "x"}, {"list", {1.0}}}));
}

// Built in memory, a Struct is not bounded by protobuf's parse limit: the conversion is.
TEST(GrpcRequest, StructNestedPastTheDepthLimitIsInvalidArgument) {
  auto nested = [](int depth) {
    google::protobuf::Struct root;
    google::protobuf::Struct* s = &root;
    for (int i = 1; i < depth; ++i) {
      s = (*s->mutable_fields())["a"].mutable_struct_value();
    }
    (*s->mutable_fields())["leaf"].set_number_value(1);
    return root;
  };
  EXPECT_TRUE(struct_to_json(nested(kMaxJsonDepth), "compression.params").ok());
  const auto deep = struct_to_json(nested(kMaxJsonDepth + 1), "compression.params");
  ASSERT_FALSE(deep.ok());
  EXPECT_EQ(deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(std::string(deep.status().message()).starts_with("compression.params: nests"))
      << deep.status();
  // Lists count as levels too; a deep one through a whole request is refused, naming the field.
  v1::GenerateRequest r;
  r.set_text("x");
  google::protobuf::Value* v = &(*r.mutable_compression()->mutable_params()->mutable_fields())["a"];
  for (int i = 0; i < 200; ++i) v = v->mutable_list_value()->add_values();
  v->set_number_value(1);
  const auto request = request_from_proto(r, default_model());
  ASSERT_FALSE(request.ok());
  EXPECT_TRUE(std::string(request.status().message()).starts_with("compression.params: nests"))
      << request.status();
}

TEST(GrpcRequest, OutputsCarryTokensLogprobsAndFinalUsage) {
  engine::RequestOutput out;
  out.index = 1;
  out.token_ids = {7};
  out.text = "seven";
  out.logprobs.push_back({7, -0.25f, {{7, -0.25f}, {8, -2.0f}}});
  out.finish_reason = "length";
  out.finished_request = true;
  out.usage = {3, 4, 1, 6, 1 << 20};
  v1::GenerateResponse response;
  output_to_proto(out, &response);
  EXPECT_EQ(response.index(), 1);
  ASSERT_EQ(response.token_ids_size(), 1);
  EXPECT_EQ(response.text(), "seven");
  ASSERT_EQ(response.logprobs_size(), 1);
  EXPECT_EQ(response.logprobs(0).top(1).token_id(), 8);
  EXPECT_EQ(response.finish_reason(), "length");
  EXPECT_TRUE(response.finished());
  EXPECT_EQ(response.usage().completion_tokens(), 4);
  EXPECT_EQ(response.usage().cached_prompt_tokens(), 1);
  EXPECT_EQ(response.usage().kv_tokens_kept(), 6);
  EXPECT_EQ(response.usage().kv_bytes(), 1 << 20);
}

}  // namespace
}  // namespace sieve::server
