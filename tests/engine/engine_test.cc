// The engine end to end on the golden fixtures: greedy output equals transformers' whether a
// request runs alone or among 64 others, with or without a prefix-cache hit, and with or without
// being preempted and recomputed.

#include "engine/engine.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "kernels/cpu/cpu_backend.h"
#include "tests/support/engine_harness.h"
#include "tests/support/golden_model.h"

namespace sieve::engine {
namespace {

namespace fs = std::filesystem;
const fs::path kGolden = fs::path(SIEVE_SOURCE_DIR) / "tests/fixtures/golden";

using Case = test_support::GoldenCase;

struct Fixture {
  std::unique_ptr<kernels::Backend> backend = kernels::cpu::make_cpu_backend();
  std::unique_ptr<models::Transformer> model;
  std::vector<Case> cases;
};

Fixture load(const std::string& name, int max_num_tokens, int max_num_seqs) {
  Fixture f;
  test_support::GoldenModel g = test_support::load_golden_model(
      kGolden / name, *f.backend, {max_num_tokens, max_num_seqs, 1 << 16});
  f.model = std::move(g.model);
  f.cases = std::move(g.cases);
  return f;
}

std::unique_ptr<Engine> make_engine(Fixture& f, EngineConfig config = {}) {
  return test_support::make_engine(*f.model, *f.backend, config);
}

Request greedy_request(const Case& c) {
  return test_support::greedy_request(c.prompt, static_cast<int>(c.greedy.size()));
}

// Drives the engine synchronously until every stream finished; returns each stream's tokens.
std::vector<std::vector<int32_t>> run_all(Engine& engine,
                                          const std::vector<std::shared_ptr<OutputStream>>& streams,
                                          std::vector<std::string>* finish = nullptr) {
  std::vector<std::vector<int32_t>> tokens;
  for (const test_support::RequestResult& r : test_support::run_to_end(engine, streams)) {
    tokens.push_back(r.all_tokens());
    if (finish && r.finished) finish->push_back(r.finish);
  }
  return tokens;
}

TEST(Engine, GreedyIsIdenticalAloneAndAmong64Others) {
  for (const char* name : {"llama3", "qwen2", "qwen3", "smollm2"}) {
    SCOPED_TRACE(name);
    Fixture f = load(name, 256, 80);
    EngineConfig config;
    config.max_num_batched_tokens = 256;
    config.max_num_seqs = 80;
    config.kv_cache_bytes = 64 << 20;
    auto engine = Engine::create(*f.model, *f.backend, nullptr, {}, config);
    ASSERT_TRUE(engine.ok()) << engine.status();
    // Alone.
    for (const Case& c : f.cases) {
      auto stream = (*engine)->add_request(greedy_request(c));
      ASSERT_TRUE(stream.ok()) << stream.status();
      EXPECT_EQ(run_all(**engine, {*stream})[0], c.greedy);
    }
    // 64 at once: the fixture's cases repeated, all in one batch.
    std::vector<std::shared_ptr<OutputStream>> streams;
    for (int i = 0; i < 64; ++i) {
      streams.push_back(*(*engine)->add_request(greedy_request(f.cases[i % f.cases.size()])));
    }
    std::vector<std::string> finish;
    auto tokens = run_all(**engine, streams, &finish);
    for (int i = 0; i < 64; ++i) EXPECT_EQ(tokens[i], f.cases[i % f.cases.size()].greedy) << i;
    EXPECT_EQ(finish, std::vector<std::string>(64, "length"));
    EXPECT_EQ((*engine)->stats().kv_pages_used.load(), 0);  // every page back (cached or free)
  }
}

TEST(Engine, GreedyIsIdenticalWithAPrefixCacheHit) {
  Fixture f = load("mistral", 64, 8);
  EngineConfig config;
  config.max_num_batched_tokens = 64;
  config.max_num_seqs = 8;
  config.kv_cache_bytes = 16 << 20;
  auto engine = *Engine::create(*f.model, *f.backend, nullptr, {}, config);
  const Case& long_case = f.cases.back();  // 300 tokens: many full pages to share
  ASSERT_GT(long_case.prompt.size(), 100u);
  auto first = *engine->add_request(greedy_request(long_case));
  EXPECT_EQ(run_all(*engine, {first})[0], long_case.greedy);
  auto second = *engine->add_request(greedy_request(long_case));
  std::vector<std::vector<int32_t>> tokens(1);
  Usage usage;
  while (engine->has_work()) engine->step();
  while (auto out = second->next(std::chrono::milliseconds(0))) {
    tokens[0].insert(tokens[0].end(), out->token_ids.begin(), out->token_ids.end());
    if (out->finished_request) usage = out->usage;
  }
  EXPECT_EQ(tokens[0], long_case.greedy);
  EXPECT_GT(usage.cached_prompt_tokens, 200) << "the second request should hit the prefix cache";
}

TEST(Engine, GreedyIsIdenticalWhenPreemptedAndRecomputed) {
  Fixture f = load("llama2", 64, 16);
  EngineConfig config;
  config.max_num_batched_tokens = 64;
  config.max_num_seqs = 16;
  config.enable_prefix_caching = false;
  // Room for about two of the long sequences: running 12 at once must preempt.
  config.num_kv_pages = 48;
  auto engine = *Engine::create(*f.model, *f.backend, nullptr, {}, config);
  std::vector<std::shared_ptr<OutputStream>> streams;
  for (int i = 0; i < 12; ++i) {
    streams.push_back(*engine->add_request(greedy_request(f.cases[2 + i % 2])));
  }
  auto tokens = run_all(*engine, streams);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(tokens[i], f.cases[2 + i % 2].greedy) << i;
  EXPECT_GT(engine->stats().preemptions.load(), 0) << "the pool was meant to run short";
}

TEST(Engine, BadRequestsAreRejectedAndNothingElseHappens) {
  Fixture f = load("llama2", 64, 4);
  auto engine = make_engine(f);
  Request r = greedy_request(f.cases[0]);
  r.prompt_token_ids = {1, 999};
  EXPECT_NE(engine->add_request(r).status().message().find("token id 999"), std::string::npos);
  r = greedy_request(f.cases[0]);
  r.params.max_tokens = 0;
  EXPECT_NE(engine->add_request(r).status().message().find("max_tokens"), std::string::npos);
  r = greedy_request(f.cases[0]);
  r.params.top_p = 0;
  EXPECT_NE(engine->add_request(r).status().message().find("top_p"), std::string::npos);
  r = greedy_request(f.cases[0]);
  r.params.max_tokens = 100000;
  EXPECT_NE(engine->add_request(r).status().message().find("exceed"), std::string::npos);
  EXPECT_FALSE(engine->has_work());
}

TEST(Engine, AbortFreesPagesAndOtherRequestsFinish) {
  Fixture f = load("llama2", 64, 8);
  auto engine = make_engine(f);
  Request long_request = greedy_request(f.cases[3]);
  long_request.params.max_tokens = 100;
  auto victim = *engine->add_request(long_request);
  auto other = *engine->add_request(greedy_request(f.cases[2]));
  for (int i = 0; i < 3; ++i) engine->step();
  engine->abort(victim->id());
  std::vector<std::string> finish;
  auto tokens = run_all(*engine, {victim, other}, &finish);
  EXPECT_LT(tokens[0].size(), 100u);
  EXPECT_EQ(tokens[1], f.cases[2].greedy);
  EXPECT_EQ(finish, (std::vector<std::string>{"abort", "length"}));
  EXPECT_EQ(engine->stats().kv_pages_used.load(), 0);
}

TEST(Engine, UsageCountsTheKvEachSampleHeldAtItsEnd) {
  Fixture f = load("llama2", 64, 8);
  auto engine = make_engine(f);
  const models::ModelConfig& c = f.model->config();
  // A page is 16 bf16 tokens' K and V; the CPU backend keeps f32, 8 tokens to a page.
  const int64_t page_bytes = int64_t{16} * 2 * 2 * c.num_layers * c.num_kv_heads * c.head_dim;
  const int tokens_per_page = 8;
  auto usage_of = [&](const std::shared_ptr<OutputStream>& stream, int* num_generated) {
    Usage usage;
    while (engine->has_work()) engine->step();
    while (auto out = stream->next(std::chrono::milliseconds(0))) {
      *num_generated += static_cast<int>(out->token_ids.size());
      if (out->finished_request) usage = out->usage;
    }
    return usage;
  };
  // Two samples of 8 tokens after a 64-token prompt: each holds 64 + 8 - 1 tokens (the last
  // sampled token is never written) in ceil(71 / 8) = 9 pages.
  Request r = greedy_request(f.cases[2]);
  ASSERT_EQ(r.prompt_token_ids.size(), 64u);
  r.params.n = 2;
  r.params.temperature = 1.0f;
  r.params.max_tokens = 8;
  int num_generated = 0;
  Usage usage = usage_of(*engine->add_request(r), &num_generated);
  EXPECT_EQ(usage.kv_tokens_kept, 2 * 71);
  EXPECT_EQ(usage.kv_bytes, 2 * 9 * page_bytes);
  // Again, from the prefix cache: the cached pages were held all the same.
  num_generated = 0;
  usage = usage_of(*engine->add_request(r), &num_generated);
  EXPECT_GT(usage.cached_prompt_tokens, 0);
  EXPECT_EQ(usage.kv_tokens_kept, 2 * 71);
  // Aborted part-way: what it had written by then.
  Request long_request = greedy_request(f.cases[2]);
  long_request.params.max_tokens = 100;
  auto victim = *engine->add_request(long_request);
  for (int i = 0; i < 4; ++i) engine->step();
  engine->abort(victim->id());
  num_generated = 0;
  usage = usage_of(victim, &num_generated);
  ASSERT_GT(num_generated, 0);
  ASSERT_LT(num_generated, 100);
  const int kept = 64 + num_generated - 1;
  EXPECT_EQ(usage.kv_tokens_kept, kept);
  EXPECT_EQ(usage.kv_bytes, (kept + tokens_per_page - 1) / tokens_per_page * page_bytes);
}

TEST(Engine, SeededSamplingDoesNotDependOnTheBatch) {
  Fixture f = load("qwen3", 64, 16);
  auto engine = make_engine(f);
  Request r = greedy_request(f.cases[1]);
  r.params.temperature = 1.0f;
  r.params.top_p = 0.95f;
  r.params.seed = 1234;
  r.params.max_tokens = 10;
  auto alone = run_all(*engine, {*engine->add_request(r)})[0];
  std::vector<std::shared_ptr<OutputStream>> streams;
  for (int i = 0; i < 8; ++i) {
    Request other = r;
    other.params.seed = 100 + i;
    other.prompt_token_ids = f.cases[i % 4].prompt;
    streams.push_back(*engine->add_request(other));
  }
  streams.push_back(*engine->add_request(r));
  auto batched = run_all(*engine, streams);
  EXPECT_EQ(batched.back(), alone);
}

TEST(Engine, ParallelSamplesShareThePromptAndDiffer) {
  Fixture f = load("qwen3", 64, 16);
  auto engine = make_engine(f);
  Request r = greedy_request(f.cases[2]);
  r.params.temperature = 1.0f;
  r.params.seed = 7;
  r.params.n = 4;
  r.params.max_tokens = 8;
  const test_support::RequestResult result = test_support::run_requests(*engine, {r})[0];
  ASSERT_EQ(result.samples.size(), 4u);
  for (const auto& s : result.samples) EXPECT_EQ(s.tokens.size(), 8u);
  EXPECT_EQ(result.usage.completion_tokens, 32);
  EXPECT_NE(result.samples[0].tokens, result.samples[1].tokens);
}

}  // namespace
}  // namespace sieve::engine

namespace sieve::engine {
namespace {

// All chunks of one stream, after the engine has finished.
std::vector<RequestOutput> drain(Engine& engine, OutputStream& stream) {
  while (engine.has_work()) engine.step();
  std::vector<RequestOutput> outs;
  while (auto out = stream.next(std::chrono::milliseconds(0))) outs.push_back(std::move(*out));
  return outs;
}

TEST(Engine, LogprobsMatchTheGoldenLogits) {
  Fixture f = load("qwen2", 64, 4);
  auto engine = make_engine(f);
  const fs::path dir = kGolden / "qwen2";
  auto references = models::load_safetensors_file((dir / "golden_logits.safetensors").string());
  ASSERT_TRUE(references.ok());
  Request r = greedy_request(f.cases[1]);
  r.params.max_tokens = 3;
  r.params.logprobs = 5;
  auto outs = drain(*engine, **engine->add_request(r));
  const Tensor& want = references->at("case1");
  const int64_t vocab = want.size(1);
  int step = 0;
  for (const RequestOutput& out : outs) {
    for (const TokenLogprob& lp : out.logprobs) {
      // log-softmax of the reference row, in double.
      const float* row = want.data<float>() + step * vocab;
      double max = row[0], sum = 0;
      for (int64_t v = 0; v < vocab; ++v) max = std::max(max, double(row[v]));
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
      const double log_z = max + std::log(sum);
      EXPECT_NEAR(lp.logprob, row[lp.token_id] - log_z, 2e-3) << "step " << step;
      ASSERT_EQ(lp.top.size(), 5u);
      EXPECT_EQ(lp.top[0].first, lp.token_id);  // greedy: the sampled token is the top one
      EXPECT_NEAR(lp.top[1].second, row[lp.top[1].first] - log_z, 2e-3);
      ++step;
    }
  }
  EXPECT_EQ(step, 3);
}

TEST(Engine, PromptLogprobsEqualNextTokenLogprobsOfEachPrefix) {
  Fixture f = load("llama2", 16, 4);  // 16-token steps: the 64-token prompt takes 4 chunks
  auto engine = make_engine(f);
  const std::vector<int32_t>& prompt = f.cases[2].prompt;
  ASSERT_EQ(prompt.size(), 64u);
  // Warm the prefix cache with the same prompt: prompt logprobs must not use it.
  drain(*engine, **engine->add_request(greedy_request(f.cases[2])));
  Request r = greedy_request(f.cases[2]);
  r.params.max_tokens = 1;
  r.params.prompt_logprobs = 3;
  auto outs = drain(*engine, **engine->add_request(r));
  ASSERT_FALSE(outs.empty());
  const std::vector<TokenLogprob>& plp = outs.front().prompt_logprobs;
  ASSERT_EQ(plp.size(), prompt.size() - 1);
  EXPECT_EQ(outs.back().usage.cached_prompt_tokens, 0);
  for (size_t k : {1u, 17u, 40u, 63u}) {
    // The next-token distribution after prompt[0..k) through an ordinary request.
    Request prefix = greedy_request(f.cases[2]);
    prefix.prompt_token_ids.assign(prompt.begin(), prompt.begin() + k);
    prefix.params.max_tokens = 1;
    prefix.params.logprobs = 3;
    auto prefix_outs = drain(*engine, **engine->add_request(prefix));
    const TokenLogprob& next = prefix_outs.front().logprobs.at(0);
    const TokenLogprob& got = plp[k - 1];
    EXPECT_EQ(got.token_id, prompt[k]);
    ASSERT_EQ(got.top.size(), 3u);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(got.top[i].first, next.top[i].first) << k;
      EXPECT_NEAR(got.top[i].second, next.top[i].second, 1e-4) << k;
    }
  }
}

}  // namespace
}  // namespace sieve::engine
