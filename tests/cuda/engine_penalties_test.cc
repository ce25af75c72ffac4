// The engine's penalties, min_tokens masks and parallel samples on the GPU: the penalized rows
// stay on the device (Backend::apply_penalties) and forks draw from device copies of their
// parent's row. Reference: the same model on the GPU run one sequence at a time
// (tests/support/paged_sequence.h, the engine's kernels at the engine's shapes), its logits
// penalized on the host as vLLM does on dense rows, and drawn by the GPU's own sample op. The
// device penalties equal the host's bit for bit (penalties_test.cc), so the tokens must be equal.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/hash.h"
#include "engine/engine.h"
#include "models/model_loader.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"
#include "tests/cuda/test_util.h"
#include "tests/support/paged_sequence.h"

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
  const std::filesystem::path dir = golden_dir() / name;
  auto files = models::load_model_files(dir.string(), models::LoadFormat::kAuto);
  SIEVE_CHECK(files.ok()) << files.status();
  auto weights = models::build_weights(files->config, files->tensors, *gpu(), dir.string());
  SIEVE_CHECK(weights.ok()) << weights.status();
  auto model = models::Transformer::create(files->config, *std::move(weights), *gpu(),
                                           {128, 16, 1 << 12, 0});
  SIEVE_CHECK(model.ok()) << model.status();
  f.model = *std::move(model);
  std::ifstream in(dir / "golden.json");
  const nlohmann::json golden = nlohmann::json::parse(in);
  for (const auto& c : golden["cases"]) {
    f.prompts.push_back(c["prompt_ids"].get<std::vector<int32_t>>());
  }
  return f;
}

// vLLM's penalties on a dense row, then the min_tokens mask.
void penalize(std::vector<float>& row, const SamplingParams& p, const std::vector<int32_t>& prompt,
              const std::vector<int32_t>& output, const std::vector<int32_t>& eos) {
  const int64_t vocab = static_cast<int64_t>(row.size());
  std::vector<int> counts(vocab, 0);
  std::vector<bool> seen(vocab, false);
  for (int32_t t : prompt) seen[t] = true;
  for (int32_t t : output) {
    ++counts[t];
    seen[t] = true;
  }
  for (int64_t t = 0; t < vocab; ++t) {
    float& x = row[t];
    if (seen[t]) x = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
    if (counts[t] > 0)
      x -= p.frequency_penalty * static_cast<float>(counts[t]) + p.presence_penalty;
  }
  if (static_cast<int>(output.size()) < p.min_tokens) {
    for (int32_t t : p.stop_token_ids) row[t] = -INFINITY;
    if (!p.ignore_eos) {
      for (int32_t t : eos) row[t] = -INFINITY;
    }
  }
}

struct Generated {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // under the raw distribution
};

// Sample `index` of a request seeded `seed`, alone.
Generated reference(Fixture& f, const std::vector<int32_t>& prompt, const SamplingParams& p,
                    uint64_t seed, int index, const std::vector<int32_t>& eos) {
  kernels::Backend& backend = *gpu();
  const int64_t vocab = f.model->config().vocab_size;
  test_support::PagedSequence seq(*f.model, backend,
                                  static_cast<int>(prompt.size()) + p.max_tokens + 1);
  auto device_row = backend.allocate(DType::kF32, {1, vocab});
  SIEVE_CHECK(device_row.ok());
  const float* logits = seq.step(prompt);
  Generated g;
  for (int t = 0; t < p.max_tokens; ++t) {
    std::vector<float> row(logits, logits + vocab);
    double max = row[0], sum = 0;
    for (float x : row) max = std::max(max, double(x));
    for (float x : row) sum += std::exp(x - max);
    penalize(row, p, prompt, g.tokens, eos);
    backend.copy(*device_row, TensorView(row.data(), DType::kF32, {1, vocab}));
    float temperature = p.temperature, top_p = p.top_p, min_p = p.min_p;
    int32_t top_k = p.top_k, token = -1;
    int64_t seed_i = static_cast<int64_t>(splitmix64(seed + static_cast<uint64_t>(index))),
            step = t;
    backend.sample({*device_row, TensorView(&temperature, DType::kF32, {1}),
                    TensorView(&top_k, DType::kI32, {1}), TensorView(&top_p, DType::kF32, {1}),
                    TensorView(&min_p, DType::kF32, {1}), TensorView(&seed_i, DType::kI64, {1}),
                    TensorView(&step, DType::kI64, {1}), TensorView(&token, DType::kI32, {1})});
    g.tokens.push_back(token);
    g.logprobs.push_back(static_cast<float>(logits[token] - max - std::log(sum)));
    const bool stop = std::count(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) > 0 ||
                      (!p.ignore_eos && std::count(eos.begin(), eos.end(), token) > 0);
    if (stop) break;
    logits = seq.step({token});
  }
  return g;
}

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
  const Generated want = reference(f, r.prompt_token_ids, r.params, 0, 0, eos);
  EXPECT_EQ(run(*engine, r)[0].tokens, want.tokens);
}

TEST(CudaEnginePenalties, SeededParallelSamplesWithPenaltiesMatchTheReference) {
  SIEVE_GPU_OR_SKIP();
  Fixture f = load("qwen2");
  auto engine = make_engine(f, {});
  Request r;
  r.prompt_token_ids = f.prompts[2];
  r.params.temperature = 0.9f;
  r.params.top_k = 50;
  r.params.seed = 1234;
  r.params.n = 3;  // two forks draw from device copies of the parent's row
  r.params.max_tokens = 10;
  r.params.ignore_eos = true;
  r.params.repetition_penalty = 1.4f;
  r.params.frequency_penalty = 0.3f;
  r.params.presence_penalty = 0.2f;
  r.params.logprobs = 0;
  const std::vector<Generated> got = run(*engine, r);
  ASSERT_EQ(got.size(), 3u);
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    const Generated want = reference(f, r.prompt_token_ids, r.params, 1234, i, {});
    EXPECT_EQ(got[i].tokens, want.tokens);
    // Logprobs are the raw distribution's, before the penalties.
    ASSERT_EQ(got[i].logprobs.size(), want.logprobs.size());
    for (size_t t = 0; t < want.logprobs.size(); ++t) {
      EXPECT_NEAR(got[i].logprobs[t], want.logprobs[t], 1e-4) << t;
    }
    distinct.insert(got[i].tokens);
  }
  EXPECT_EQ(distinct.size(), 3u);
}

}  // namespace
}  // namespace sieve::cuda_test
