// make_request carries the setting's compression and refuses (Unimplemented, an "unsupported"
// row) what the engine cannot run; results.json round-trips every field.

#include "eval/request.h"

#include <gtest/gtest.h>

#include "eval/results.h"

namespace sieve::eval {
namespace {

TaskPrompt prompt() {
  TaskPrompt p;
  p.token_ids = {1, 2, 3, 4};
  p.context_tokens = 2;
  return p;
}

TEST(MakeRequest, FullCacheIsGreedyWithTopLogprobs) {
  for (Protocol protocol : {Protocol::kAware, Protocol::kAgnostic}) {
    auto r = make_request(prompt(), {"none", 1.0, std::nullopt, protocol}, 12);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->prompt_token_ids, prompt().token_ids);
    EXPECT_EQ(r->params.temperature, 0.0f);
    EXPECT_EQ(r->params.max_tokens, 12);
    EXPECT_EQ(r->params.logprobs, kFidelityTopLogprobs);
  }
}

TEST(MakeRequest, AwareCarriesTheCompressionAgnosticWaitsForThePrefixCache) {
  auto aware = make_request(prompt(), {"snapkv", 0.25, std::nullopt, Protocol::kAware}, 12);
  ASSERT_TRUE(aware.ok()) << aware.status();
  ASSERT_NE(aware->compression, nullptr);
  EXPECT_EQ(aware->compression->method, "snapkv");
  EXPECT_EQ(aware->compression->keep_ratio, 0.25);
  auto budget = make_request(prompt(), {"gkv", std::nullopt, 64, Protocol::kAware}, 12);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->compression->budget, 64);
  auto agnostic = make_request(prompt(), {"snapkv", 0.25, std::nullopt, Protocol::kAgnostic}, 12);
  EXPECT_EQ(agnostic.status().code(), absl::StatusCode::kUnimplemented);
  auto unknown = make_request(prompt(), {"nope", 0.25, std::nullopt, Protocol::kAware}, 12);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MakeRequest, PolicyListIsTheRegistryAfterTheFullCache) {
  const auto& names = policy_names();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "none");
  for (const char* name :
       {"streaming_llm", "h2o", "tova", "snapkv", "pyramidkv", "adakv", "keydiff", "knorm", "gkv"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
}

TEST(Results, RecordsRoundTripThroughJson) {
  Record r;
  r.task = "passkey";
  r.method = "snapkv";
  r.keep = 0.25;
  r.protocol = "agnostic";
  r.status = "ok";
  r.scoring = "contains";
  r.score = 0.75;
  r.n = 8;
  r.leakage_rate = 0.125;
  r.mean_kv_tokens_kept = 77.5;
  r.mean_kv_bytes = 1e6;
  r.wall_s = 3.5;
  r.greedy_agreement = 0.9;
  r.first_divergence_mean = 4;
  r.diverged_share = 0.5;
  r.mean_kl = 0.01;
  r.by_length = {{256, {1.0, 4}}, {512, {0.5, 4}}};
  r.note = "x";
  const Record back = record_from_json(to_json(r));
  EXPECT_EQ(to_json(back), to_json(r));
  EXPECT_EQ(back.by_length, r.by_length);
  EXPECT_FALSE(back.budget.has_value());
}

}  // namespace
}  // namespace sieve::eval
