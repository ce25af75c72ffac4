// The engine's penalties, min_tokens masks and parallel samples on the GPU: the penalized rows
// stay on the device (Backend::apply_penalties) and forks draw from device copies of their
// parent's row. Reference: the same model on the GPU run one sequence at a time
// (tests/support/penalty_reference.h; the engine's kernels at the engine's shapes), its logits
// penalized on the host as vLLM does on dense rows, and drawn by the GPU's own sample op. The
// device penalties equal the host's bit for bit (penalties_test.cc), so the tokens must be equal.

#include <gtest/gtest.h>

#include <filesystem>

#include "engine/engine.h"
#include "tests/cuda/test_util.h"
#include "tests/support/golden_model.h"
#include "tests/support/penalty_reference.h"

namespace sieve::cuda_test {
namespace {

using engine::Engine;
using engine::Request;
using engine::SamplingParams;

struct Fixture {
  std::unique_ptr<models::Transformer> model;
  std::vector<std::vector<int32_t>> prompts;
};

// Eager steps only (max_graph_seqs 0): the reference's steps are eager too.
Fixture load(const std::string& name) {
  Fixture f;
  test_support::GoldenModel g =
      test_support::load_golden_model(golden_dir() / name, *gpu(), {128, 16, 1 << 12, 0});
  f.model = std::move(g.model);
  for (test_support::GoldenCase& c : g.cases) f.prompts.push_back(std::move(c.prompt));
  return f;
}

using test_support::Generated;

// Each sample's tokens and logprobs from the engine.
std::vector<Generated> run(Engine& engine, const Request& r) {
  auto stream = engine.add_request(r);
  SIEVE_CHECK(stream.ok()) << stream.status();
  while (engine.has_work()) engine.step();
  std::vector<Generated> samples(r.params.n);
  while (auto chunk = (*stream)->next(std::chrono::milliseconds(0))) {
    Generated& g = samples.at(chunk->index);
    g.tokens.insert(g.tokens.end(), chunk->token_ids.begin(), chunk->token_ids.end());
    for (const engine::TokenLogprob& lp : chunk->logprobs) g.logprobs.push_back(lp.logprob);
  }
  return samples;
}

std::unique_ptr<Engine> make_engine(Fixture& f, std::vector<int32_t> eos) {
  engine::EngineConfig config;
  config.max_num_batched_tokens = 128;
  config.max_num_seqs = 16;
  config.kv_cache_bytes = 16 << 20;
  auto engine = Engine::create(*f.model, *gpu(), nullptr, std::move(eos), config);
  SIEVE_CHECK(engine.ok()) << engine.status();
  return *std::move(engine);
}

TEST(CudaEnginePenalties, GreedyWithPenaltiesAndMinTokensMatchesTheReference) {
  SIEVE_GPU_OR_SKIP();
  Fixture f = load("qwen3");
  const std::vector<int32_t> eos = {84};
  auto engine = make_engine(f, eos);
  Request r;
  r.prompt_token_ids = f.prompts[1];
  r.params.temperature = 0;
  r.params.max_tokens = 12;
  r.params.min_tokens = 4;
  r.params.stop_token_ids = {252};
  r.params.repetition_penalty = 1.5f;
  r.params.frequency_penalty = 0.4f;
  r.params.presence_penalty = 0.3f;
  const Generated want =
      test_support::reference(*f.model, *gpu(), r.prompt_token_ids, r.params, 0, 0, eos);
  EXPECT_EQ(run(*engine, r)[0].tokens, want.tokens);
}

TEST(CudaEnginePenalties, SeededParallelSamplesWithPenaltiesMatchTheReference) {
  SIEVE_GPU_OR_SKIP();
  Fixture f = load("qwen2");
  auto engine = make_engine(f, {});
  // The two forks draw from device copies of the parent's row.
  const Request r = test_support::parallel_penalized_request(f.prompts[2]);
  test_support::expect_samples_match_reference(*f.model, *gpu(), r, run(*engine, r));
}

}  // namespace
}  // namespace sieve::cuda_test
