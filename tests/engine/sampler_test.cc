// Penalties, min_tokens masks and logprobs through the engine, against an independent reference
// (tests/support/penalty_reference.h): the model run one sequence at a time, penalties applied to
// dense rows as vLLM writes them, and the CPU backend's sample op with the engine's per-sample
// seeds. Also PenaltyTokens and SamplingBatch on their own.

#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <tuple>

#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/support/engine_harness.h"
#include "tests/support/golden_model.h"
#include "tests/support/penalty_reference.h"

namespace sieve::engine {
namespace {

namespace fs = std::filesystem;

TEST(PenaltyTokens, ListsPromptAndOutputTokensOnceWithOutputCounts) {
  SamplingParams p;
  p.repetition_penalty = 1.2f;
  PenaltyTokens t(p, std::vector<int32_t>{5, 7, 5, 9});
  t.add_output(7);
  t.add_output(11);
  t.add_output(7);
  EXPECT_EQ(std::vector<int32_t>(t.ids().begin(), t.ids().end()),
            (std::vector<int32_t>{5, 7, 9, 11}));
  EXPECT_EQ(std::vector<int32_t>(t.output_counts().begin(), t.output_counts().end()),
            (std::vector<int32_t>{0, 2, 0, 1}));
  EXPECT_EQ(t.find(9), 2);
  EXPECT_EQ(t.find(6), -1);
  // Without a repetition penalty the prompt does not matter.
  p.repetition_penalty = 1.0f;
  p.frequency_penalty = 0.5f;
  PenaltyTokens output_only(p, std::vector<int32_t>{5, 7});
  EXPECT_TRUE(output_only.ids().empty());
}

TEST(SamplingBatch, MasksEachStopTokenOnceAndOnlyBeforeMinTokens) {
  SamplingParams p;
  p.frequency_penalty = 0.5f;
  p.min_tokens = 2;
  p.stop_token_ids = {3, 4, 3};
  PenaltyTokens t(p, {});
  t.add_output(4);
  SamplingBatch b;
  const std::vector<int32_t> eos = {2, 3};
  b.add(p, 1, 1, &t, eos);  // before min_tokens: 4 (listed) flagged, 3 and 2 appended once
  b.add(p, 1, 2, &t, eos);  // at min_tokens: only the penalty tokens
  SamplingParams plain;
  b.add(plain, 1, 0, nullptr, eos);  // nothing listed
  float logits[3 * 8] = {};
  const kernels::PenaltyArgs a = b.penalty_args(TensorView(logits, DType::kF32, {3, 8}), 0, 3);
  auto values = [](const TensorView& v) {
    return std::vector<int32_t>(v.data<int32_t>(), v.data<int32_t>() + v.numel());
  };
  EXPECT_EQ(values(a.token_indptr), (std::vector<int32_t>{0, 3, 4, 4}));
  EXPECT_EQ(values(a.token_ids), (std::vector<int32_t>{4, 3, 2, 4}));
  EXPECT_EQ(values(a.output_counts), (std::vector<int32_t>{1, 0, 0, 1}));
  const uint8_t* flags = a.flags.data<uint8_t>();
  EXPECT_EQ(flags[0], kernels::kPenaltySeen | kernels::kPenaltyMask);
  EXPECT_EQ(flags[1], kernels::kPenaltyMask);
  EXPECT_EQ(flags[2], kernels::kPenaltyMask);
  EXPECT_EQ(flags[3], kernels::kPenaltySeen);
  EXPECT_TRUE(b.has_penalties(0, 2));
  EXPECT_FALSE(b.has_penalties(2, 3));
  // A sub-range is rebased to its own first entry.
  const kernels::PenaltyArgs tail = b.penalty_args(TensorView(logits, DType::kF32, {2, 8}), 1, 3);
  EXPECT_EQ(values(tail.token_indptr), (std::vector<int32_t>{0, 1, 1}));
  EXPECT_EQ(values(tail.token_ids), (std::vector<int32_t>{4}));
}

struct Model {
  std::unique_ptr<kernels::Backend> backend = kernels::cpu::make_cpu_backend();
  std::unique_ptr<models::Transformer> model;
  std::vector<std::vector<int32_t>> prompts;
};

Model load(const std::string& name) {
  Model m;
  test_support::GoldenModel g = test_support::load_golden_model(
      fs::path(SIEVE_SOURCE_DIR) / "tests/fixtures/golden" / name, *m.backend, {128, 16, 1 << 12});
  m.model = std::move(g.model);
  for (test_support::GoldenCase& c : g.cases) m.prompts.push_back(std::move(c.prompt));
  return m;
}

using test_support::Generated;

// Each sample's tokens and logprobs from the engine, request after request.
std::vector<Generated> run(Engine& engine, const std::vector<Request>& requests) {
  std::vector<Generated> out;
  for (const test_support::RequestResult& r : test_support::run_requests(engine, requests)) {
    EXPECT_TRUE(r.finished);
    for (const test_support::SampleResult& sample : r.samples) {
      Generated g;
      g.tokens = sample.tokens;
      g.logprobs = sample.logprobs;
      out.push_back(std::move(g));
    }
  }
  return out;
}

std::unique_ptr<Engine> make_engine(Model& m, std::vector<int32_t> eos) {
  EngineConfig config;
  config.kv_cache_bytes = 16 << 20;
  return test_support::make_engine(*m.model, *m.backend, config, std::move(eos));
}

TEST(EnginePenalties, GreedyWithPenaltiesMatchesTheReference) {
  Model m = load("qwen3");  // its plain greedy output repeats 84, 252, ...: penalties show
  auto engine = make_engine(m, {});
  Request r;
  r.prompt_token_ids = m.prompts[0];
  r.params.temperature = 0;
  r.params.max_tokens = 12;
  r.params.ignore_eos = true;
  const std::vector<int32_t> plain = run(*engine, {r})[0].tokens;
  for (const auto& [rep, freq, pres] : std::vector<std::tuple<float, float, float>>{
           {1.5f, 0, 0}, {0.7f, 0, 0}, {1, 0.6f, 0}, {1, 0, 1.5f}, {1.3f, 0.4f, -0.2f}}) {
    SCOPED_TRACE(::testing::Message() << rep << " " << freq << " " << pres);
    r.params.repetition_penalty = rep;
    r.params.frequency_penalty = freq;
    r.params.presence_penalty = pres;
    const Generated want =
        test_support::reference(*m.model, *m.backend, r.prompt_token_ids, r.params, 0, 0, {});
    EXPECT_EQ(run(*engine, {r})[0].tokens, want.tokens);
    if (rep > 1 || freq > 0 || pres > 0) {
      EXPECT_NE(want.tokens, plain);
    }
  }
}

TEST(EnginePenalties, MinTokensMasksStopAndEosTokensUntilReached) {
  Model m = load("qwen3");
  const std::vector<int32_t> eos = {84};  // the plain greedy's first token
  auto engine = make_engine(m, eos);
  Request r;
  r.prompt_token_ids = m.prompts[0];
  r.params.temperature = 0;
  r.params.max_tokens = 12;
  r.params.min_tokens = 5;
  r.params.stop_token_ids = {252, 84};
  const Generated want =
      test_support::reference(*m.model, *m.backend, r.prompt_token_ids, r.params, 0, 0, eos);
  const std::vector<int32_t> got = run(*engine, {r})[0].tokens;
  EXPECT_EQ(got, want.tokens);
  ASSERT_GE(got.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(got[i] != 84 && got[i] != 252) << i;
}

TEST(EnginePenalties, SeededParallelSamplesWithPenaltiesMatchTheReference) {
  Model m = load("qwen2");
  auto engine = make_engine(m, {});
  const Request r = test_support::parallel_penalized_request(m.prompts[1]);
  test_support::expect_samples_match_reference(*m.model, *m.backend, r, run(*engine, {r}));
}

TEST(EnginePenalties, PenalizedDrawsDoNotDependOnTheBatch) {
  Model m = load("qwen2");
  auto engine = make_engine(m, {2});
  Request penalized;
  penalized.prompt_token_ids = m.prompts[2];
  penalized.params.temperature = 0.8f;
  penalized.params.seed = 99;
  penalized.params.max_tokens = 10;
  penalized.params.repetition_penalty = 1.3f;
  penalized.params.frequency_penalty = 0.5f;
  penalized.params.min_tokens = 6;
  const std::vector<int32_t> alone = run(*engine, {penalized})[0].tokens;
  std::vector<Request> batch;
  for (int i = 0; i < 6; ++i) {
    Request other;
    other.prompt_token_ids = m.prompts[i % 3];
    other.params.temperature = i % 2 ? 0.0f : 1.0f;
    other.params.seed = 7 + i;
    other.params.max_tokens = 8;
    other.params.presence_penalty = i % 3 == 0 ? 0.7f : 0.0f;
    other.params.logprobs = i % 2 ? 1 : -1;
    other.params.n = i == 4 ? 2 : 1;
    batch.push_back(other);
  }
  batch.insert(batch.begin() + 3, penalized);
  const std::vector<Generated> got = run(*engine, batch);
  EXPECT_EQ(got[3].tokens, alone);
}

}  // namespace
}  // namespace sieve::engine
