// The engine's step loop against a fake model (tests/support/fake_model_runner.h), which needs
// no weights: greedy output follows the fake's script (token t is followed by t + 1), so every
// expectation is known in advance. Scheduling past the step's limits, chunked prefill,
// preemption under a small KV cache, aborts, stop conditions, parallel samples, prompt logprobs,
// and the field every bad request names.

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "core/field_error.h"
#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/support/engine_harness.h"
#include "tests/support/fake_model_runner.h"

namespace sieve::engine {
namespace {

using test_support::FakeModelRunner;
using test_support::greedy_request;
using test_support::RequestResult;
using test_support::run_requests;

constexpr int kVocab = 32;

// The tokens the default script generates after `last`: last + 1, last + 2, ... (mod vocab).
std::vector<int32_t> counting_from(int32_t last, int count) {
  std::vector<int32_t> out;
  for (int i = 1; i <= count; ++i) out.push_back((last + i) % kVocab);
  return out;
}

std::vector<int32_t> prompt_of(int len, int32_t first = 1) {
  std::vector<int32_t> p(len);
  for (int i = 0; i < len; ++i) p[i] = (first + i) % kVocab;
  return p;
}

struct FakeEngine {
  std::unique_ptr<kernels::Backend> backend = kernels::cpu::make_cpu_backend();
  std::unique_ptr<FakeModelRunner> runner;
  std::unique_ptr<Engine> engine;

  explicit FakeEngine(models::StepLimits limits = {64, 4, 1 << 12}, EngineConfig config = {},
                      std::vector<int32_t> eos = {},
                      FakeModelRunner::Script script = FakeModelRunner::next_token_script) {
    runner = std::make_unique<FakeModelRunner>(kVocab, limits, 1024, std::move(script));
    engine = test_support::make_engine(*runner, *backend, config, std::move(eos));
  }
};

TEST(EngineLoop, GreedyFollowsTheScript) {
  FakeEngine s;
  const RequestResult r = run_requests(*s.engine, {greedy_request({5, 6, 7}, 4)})[0];
  EXPECT_EQ(r.tokens(), counting_from(7, 4));
  EXPECT_EQ(r.finish, "length");
  EXPECT_EQ(r.usage.prompt_tokens, 3);
  EXPECT_EQ(r.usage.completion_tokens, 4);
  // One prefill step, then one decode step per token but the last (sampled in the prefill
  // step's row and three decodes).
  ASSERT_EQ(s.runner->batches.size(), 4u);
  EXPECT_EQ(s.runner->batches[0].token_ids, std::vector<int32_t>({5, 6, 7}));
  for (size_t i = 1; i < 4; ++i) EXPECT_EQ(s.runner->batches[i].num_tokens(), 1);
  EXPECT_EQ(s.engine->stats().kv_pages_used.load(), 0);
}

// Ten requests on a step of 4 sequences and 64 tokens; a 150-token prompt in chunks.
TEST(EngineLoop, SchedulesPastTheStepLimitsAndChunksLongPrompts) {
  FakeEngine s;
  std::vector<Request> requests;
  for (int i = 0; i < 10; ++i) requests.push_back(greedy_request(prompt_of(3 + i, i), 6));
  requests.push_back(greedy_request(prompt_of(150, 2), 5));
  const std::vector<RequestResult> results = run_requests(*s.engine, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(results[i].tokens(),
              counting_from(requests[i].prompt_token_ids.back(), requests[i].params.max_tokens))
        << i;
    EXPECT_EQ(results[i].finish, "length") << i;
  }
  int most_seqs = 0;
  for (const models::StepBatch& b : s.runner->batches) {
    EXPECT_LE(b.num_tokens(), 64);
    most_seqs = std::max(most_seqs, b.num_seqs());
  }
  EXPECT_EQ(most_seqs, 4);  // the step was full at some point, never over
  // The long prompt's tokens went through the runner in more than one step, each once.
  int prompt_tokens_seen = 0;
  for (const models::StepBatch& b : s.runner->batches) {
    for (int s_i = 0; s_i < b.num_seqs(); ++s_i) {
      if (b.qo_indptr[s_i + 1] - b.qo_indptr[s_i] > 1) {
        prompt_tokens_seen += b.qo_indptr[s_i + 1] - b.qo_indptr[s_i];
      }
    }
  }
  EXPECT_GT(prompt_tokens_seen, 150);
  EXPECT_EQ(s.engine->stats().kv_pages_used.load(), 0);
}

// 16 pages of 8 tokens hold 128 tokens; four requests of 20 + 40 tokens need 240: some are
// preempted, recomputed, and still produce the script's tokens.
TEST(EngineLoop, PreemptedRequestsRecomputeToTheSameTokens) {
  EngineConfig config;
  config.num_kv_pages = 16;
  config.enable_prefix_caching = false;
  FakeEngine s({64, 4, 1 << 12}, config);
  std::vector<Request> requests;
  for (int i = 0; i < 4; ++i) requests.push_back(greedy_request(prompt_of(20, 3 * i), 40));
  const std::vector<RequestResult> results = run_requests(*s.engine, requests);
  EXPECT_GT(s.engine->stats().preemptions.load(), 0);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(results[i].tokens(), counting_from(requests[i].prompt_token_ids.back(), 40)) << i;
  }
  EXPECT_EQ(s.engine->stats().kv_pages_used.load(), 0);
}

TEST(EngineLoop, AbortEndsRunningAndWaitingRequests) {
  FakeEngine s({64, 1, 1 << 12});  // one sequence a step: the second request waits
  auto running = test_support::submit(*s.engine, greedy_request({1, 2}, 100));
  auto waiting = test_support::submit(*s.engine, greedy_request({3, 4}, 100));
  for (int i = 0; i < 5; ++i) s.engine->step();
  s.engine->abort(running->id());
  s.engine->abort(waiting->id());
  const std::vector<RequestResult> results =
      test_support::run_to_end(*s.engine, {running, waiting});
  EXPECT_EQ(results[0].finish, "abort");
  EXPECT_GT(results[0].tokens().size(), 0u);
  EXPECT_LT(results[0].tokens().size(), 100u);
  EXPECT_EQ(results[1].finish, "abort");
  EXPECT_TRUE(results[1].samples.empty() || results[1].tokens().empty());
  EXPECT_EQ(s.engine->stats().kv_pages_used.load(), 0);
  EXPECT_FALSE(s.engine->has_work());
}

TEST(EngineLoop, StopsAtEosAndStopTokens) {
  FakeEngine s({64, 4, 1 << 12}, {}, /*eos=*/{12});
  Request eos = greedy_request({9}, 10);
  eos.params.ignore_eos = false;
  Request ignored = greedy_request({9}, 5);  // ignore_eos
  Request stop_token = greedy_request({20}, 10);
  stop_token.params.stop_token_ids = {23};
  const std::vector<RequestResult> results = run_requests(*s.engine, {eos, ignored, stop_token});
  EXPECT_EQ(results[0].tokens(), std::vector<int32_t>({10, 11, 12}));
  EXPECT_EQ(results[0].finish, "stop");
  EXPECT_EQ(results[1].tokens(), counting_from(9, 5));
  EXPECT_EQ(results[1].finish, "length");
  EXPECT_EQ(results[2].tokens(), std::vector<int32_t>({21, 22, 23}));
  EXPECT_EQ(results[2].finish, "stop");
}

// A flat distribution: every token equally likely, so the draws show the seeds.
void flat_script(int32_t, int32_t, std::span<float> logits) {
  std::fill(logits.begin(), logits.end(), 0.0f);
}

TEST(EngineLoop, ParallelSamplesAreSeededAndIndependentOfTheBatch) {
  FakeEngine s({64, 8, 1 << 12}, {}, {}, flat_script);
  Request r;
  r.prompt_token_ids = {1, 2, 3};
  r.params.temperature = 1.0f;
  r.params.seed = 7;
  r.params.n = 3;
  r.params.max_tokens = 8;
  r.params.ignore_eos = true;
  const RequestResult alone = run_requests(*s.engine, {r})[0];
  ASSERT_EQ(alone.samples.size(), 3u);
  for (const auto& sample : alone.samples) {
    EXPECT_EQ(sample.tokens.size(), 8u);
    EXPECT_EQ(sample.finish, "length");
  }
  EXPECT_FALSE(alone.samples[0].tokens == alone.samples[1].tokens &&
               alone.samples[1].tokens == alone.samples[2].tokens);
  EXPECT_EQ(alone.usage.completion_tokens, 24);
  Request other = r;
  other.params.seed = 8;
  other.params.n = 2;
  const std::vector<RequestResult> batched = run_requests(*s.engine, {other, r, other});
  for (int i = 0; i < 3; ++i) EXPECT_EQ(batched[1].samples[i].tokens, alone.samples[i].tokens);
}

// log-softmax of the default script's row for `input` at `token`.
float script_logprob(int32_t input, int32_t token) {
  const double norm = std::log(std::exp(10.0) + (kVocab - 1));
  return static_cast<float>(((input + 1) % kVocab == token ? 10.0 : 0.0) - norm);
}

TEST(EngineLoop, LogprobsComeFromTheModelsRows) {
  FakeEngine s;
  Request r = greedy_request({3, 4, 9}, 2);
  r.params.prompt_logprobs = 0;
  r.params.logprobs = 1;
  const RequestResult result = run_requests(*s.engine, {r})[0];
  ASSERT_EQ(result.prompt_logprobs.size(), 2u);  // positions 1 and 2
  EXPECT_EQ(result.prompt_logprobs[0].token_id, 4);
  EXPECT_NEAR(result.prompt_logprobs[0].logprob, script_logprob(3, 4), 1e-5);
  EXPECT_EQ(result.prompt_logprobs[1].token_id, 9);
  EXPECT_NEAR(result.prompt_logprobs[1].logprob, script_logprob(4, 9), 1e-5);
  EXPECT_EQ(result.tokens(), std::vector<int32_t>({10, 11}));
  ASSERT_EQ(result.samples[0].logprobs.size(), 2u);
  EXPECT_NEAR(result.samples[0].logprobs[0], script_logprob(9, 10), 1e-5);
  EXPECT_NEAR(result.samples[0].logprobs[1], script_logprob(10, 11), 1e-5);
}

// Every bad request is refused before it is queued, naming its field as data.
TEST(EngineLoop, BadRequestsNameTheirField) {
  FakeEngine s({64, 4, 1 << 12}, [] {
    EngineConfig c;
    c.max_model_len = 100;
    return c;
  }());
  struct Case {
    std::function<void(Request&)> edit;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](Request& r) { r.prompt_token_ids.clear(); }, "prompt"},
      {[](Request& r) { r.prompt_token_ids[1] = kVocab; }, "prompt"},
      {[](Request& r) { r.prompt_token_ids[0] = -1; }, "prompt"},
      {[](Request& r) { r.prompt_token_ids = prompt_of(100); }, "prompt"},
      {[](Request& r) { r.params.max_tokens = 98; }, "max_tokens"},
      {[](Request& r) { r.params.max_tokens = 0; }, "max_tokens"},
      {[](Request& r) {
         r.params.stop_token_ids = {3, kVocab + 5};
       },
       "stop_token_ids"},
      {[](Request& r) { r.params.n = 5; }, "n"},
      {[](Request& r) { r.params.temperature = -1; }, "temperature"},
      {[](Request& r) { r.params.top_p = 0; }, "top_p"},
      {[](Request& r) { r.params.logprobs = 99; }, "logprobs"},
  };
  for (const Case& c : cases) {
    Request r = greedy_request({1, 2, 3}, 4);
    c.edit(r);
    const auto added = s.engine->add_request(r);
    ASSERT_FALSE(added.ok()) << c.field;
    EXPECT_EQ(added.status().code(), absl::StatusCode::kInvalidArgument) << added.status();
    EXPECT_EQ(error_field(added.status()), c.field) << added.status();
    EXPECT_TRUE(std::string(added.status().message()).starts_with(c.field)) << added.status();
  }
  EXPECT_FALSE(s.engine->has_work());
  // An API's own names for the prompt and max_tokens.
  const RequestFields chat{"messages", "max_completion_tokens"};
  Request r = greedy_request({1, 2, 3}, 0);
  Status bad = check_request(r, s.engine->input_limits(), chat);
  EXPECT_EQ(error_field(bad), "max_completion_tokens");
  EXPECT_EQ(bad.message(), "max_completion_tokens must be at least 1, got 0");
  r.params.max_tokens = 98;
  EXPECT_EQ(error_field(check_request(r, s.engine->input_limits(), chat)), "max_completion_tokens");
  r.prompt_token_ids.clear();
  EXPECT_EQ(error_field(check_request(r, s.engine->input_limits(), chat)), "messages");
  // And the engine serves on.
  EXPECT_EQ(run_requests(*s.engine, {greedy_request({1}, 3)})[0].tokens(), counting_from(1, 3));
}

}  // namespace
}  // namespace sieve::engine
