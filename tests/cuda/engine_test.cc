// The engine on the GPU, on the golden fixtures: decode steps replayed as CUDA graphs give the
// eager steps' tokens, and greedy output does not depend on the batch around a request, on a
// prefix-cache hit, on the prefill chunk size or on preemption.
//
// Baseline: each case run alone, eagerly. A graph step at a bucket's exact size runs the eager
// step's kernels with the eager step's shapes, so those tokens must be identical. Elsewhere the
// shapes differ (a GEMM of M rows picks its own algorithm; a prompt in chunks takes other
// attention kernels), so bf16 may flip a near-tie: most sequences must match, every one must
// finish, and no page may leak.

#include "engine/engine.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "tests/cuda/test_util.h"
#include "tests/support/golden_model.h"

namespace sieve::cuda_test {
namespace {

namespace fs = std::filesystem;
using engine::Engine;
using engine::EngineConfig;
using engine::OutputStream;
using engine::Request;

fs::path fixture_dir(const std::string& name) { return golden_dir() / name; }

constexpr int kMaxNewTokens = 24;  // the most tokens a test asks for

struct Fixture {
  std::unique_ptr<models::Transformer> model;
  std::vector<std::vector<int32_t>> prompts;
};

Fixture load(const std::string& name, int max_num_tokens, int max_num_seqs, int max_graph_seqs) {
  Fixture f;
  test_support::GoldenModel g = test_support::load_golden_model(
      fixture_dir(name), *gpu(), {max_num_tokens, max_num_seqs, 1 << 16, max_graph_seqs});
  f.model = std::move(g.model);
  // The prompts that leave room for kMaxNewTokens in the fixture's context (a small one for
  // llama_dynamic).
  for (test_support::GoldenCase& c : g.cases) {
    if (static_cast<int>(c.prompt.size()) + kMaxNewTokens <= f.model->config().context_length()) {
      f.prompts.push_back(std::move(c.prompt));
    }
  }
  SIEVE_CHECK_GE(f.prompts.size(), 2u) << name;
  return f;
}

std::unique_ptr<Engine> make_engine(Fixture& f, EngineConfig config = {}) {
  config.max_num_batched_tokens = f.model->limits().max_num_tokens;
  config.max_num_seqs = f.model->limits().max_num_seqs;
  if (config.num_kv_pages == 0) config.kv_cache_bytes = 64 << 20;
  auto engine = Engine::create(*f.model, *gpu(), nullptr, {}, config);
  SIEVE_CHECK(engine.ok()) << engine.status();
  return *std::move(engine);
}

Request greedy(const std::vector<int32_t>& prompt, int max_tokens) {
  Request r;
  r.prompt_token_ids = prompt;
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  return r;
}

// Runs the requests together to the end; each one's tokens.
std::vector<std::vector<int32_t>> run(Engine& engine, const std::vector<Request>& requests) {
  std::vector<std::shared_ptr<OutputStream>> streams;
  for (const Request& r : requests) {
    auto stream = engine.add_request(r);
    SIEVE_CHECK(stream.ok()) << stream.status();
    streams.push_back(*stream);
  }
  int guard = 0;
  while (engine.has_work() && ++guard < 100000) engine.step();
  std::vector<std::vector<int32_t>> tokens(streams.size());
  for (size_t i = 0; i < streams.size(); ++i) {
    while (auto out = streams[i]->next(std::chrono::milliseconds(0))) {
      tokens[i].insert(tokens[i].end(), out->token_ids.begin(), out->token_ids.end());
    }
  }
  return tokens;
}

// The fixture's prompts, cut or repeated to `count` requests of `max_tokens` each.
std::vector<Request> requests(const Fixture& f, int count, int max_tokens) {
  std::vector<Request> out;
  for (int i = 0; i < count; ++i)
    out.push_back(greedy(f.prompts[i % f.prompts.size()], max_tokens));
  return out;
}

// How many runs equal the baseline (each request's prompt run alone); every run must be whole.
int count_equal(const std::vector<std::vector<int32_t>>& got,
                const std::vector<std::vector<int32_t>>& baseline, int max_tokens) {
  int equal = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].size(), static_cast<size_t>(max_tokens)) << "request " << i;
    equal += got[i] == baseline[i % baseline.size()];
  }
  return equal;
}

std::vector<std::vector<int32_t>> alone(Engine& engine, const Fixture& f, int max_tokens) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& prompt : f.prompts) out.push_back(run(engine, {greedy(prompt, max_tokens)})[0]);
  return out;
}

TEST(CudaEngine, GraphStepsGiveTheEagerTokens) {
  SIEVE_GPU_OR_SKIP();
  for (const char* name : {"llama3", "qwen2", "qwen3", "llama_dynamic"}) {
    SCOPED_TRACE(name);
    // Steps of 4096 tokens: every prompt is prefilled in the first step, so all requests decode
    // together until they finish together.
    Fixture graphs = load(name, 4096, 64, 64);
    Fixture eager = load(name, 4096, 64, 0);
    auto graph_engine = make_engine(graphs);
    auto eager_engine = make_engine(eager);
    EXPECT_GT(graph_engine->runner().num_graphs(), 0);
    EXPECT_EQ(eager_engine->runner().num_graphs(), 0);
    // 8 and 24 requests finish together: every decode step is a bucket's exact size.
    for (const int count : {8, 24}) {
      const auto reqs = requests(graphs, count, 24);
      EXPECT_EQ(run(*graph_engine, reqs), run(*eager_engine, reqs)) << count << " requests";
    }
    // 5 requests pad to the bucket of 8.
    const auto reqs = requests(graphs, 5, 24);
    const auto padded = run(*graph_engine, reqs);
    EXPECT_GE(count_equal(padded, run(*eager_engine, reqs), 24), 4);
    EXPECT_EQ(graph_engine->stats().kv_pages_used.load(), 0);
  }
}

TEST(CudaEngine, GreedyDoesNotDependOnTheBatchTheCacheOrTheChunks) {
  SIEVE_GPU_OR_SKIP();
  constexpr int kTokens = 20;
  std::printf("[ engine   ] %-8s %-22s %s\n", "fixture", "scenario", "equal to alone");
  for (const char* name : {"llama3", "mistral", "qwen2"}) {
    SCOPED_TRACE(name);
    Fixture f = load(name, 256, 80, 256);
    EngineConfig no_cache;
    no_cache.enable_prefix_caching = false;
    auto engine = make_engine(f, no_cache);
    const auto baseline = alone(*engine, f, kTokens);
    auto report = [&](const char* scenario, int equal, int total) {
      std::printf("[ engine   ] %-8s %-22s %d / %d\n", name, scenario, equal, total);
      EXPECT_GE(equal * 10, total * 8) << scenario;
    };
    // Among 64 others.
    const auto batch = run(*engine, requests(f, 64, kTokens));
    report("64 at once", count_equal(batch, baseline, kTokens), 64);
    // Prompts in chunks of 32 tokens.
    Fixture chunked = load(name, 32, 16, 16);
    auto chunk_engine = make_engine(chunked, no_cache);
    const auto chunks =
        run(*chunk_engine, requests(f, static_cast<int>(f.prompts.size()), kTokens));
    report("chunks of 32", count_equal(chunks, baseline, kTokens),
           static_cast<int>(f.prompts.size()));
    // A prefix-cache hit: each prompt twice, the second time from cached pages.
    auto cache_engine = make_engine(f);
    int equal = 0;
    for (size_t i = 0; i < f.prompts.size(); ++i) {
      for (int round = 0; round < 2; ++round) {
        equal += run(*cache_engine, {greedy(f.prompts[i], kTokens)})[0] == baseline[i];
      }
    }
    report("prefix-cache hit", equal, 2 * static_cast<int>(f.prompts.size()));
    EXPECT_EQ(cache_engine->stats().kv_pages_used.load(), 0);
  }
}

TEST(CudaEngine, PreemptedRequestsRecomputeAndFinish) {
  SIEVE_GPU_OR_SKIP();
  constexpr int kTokens = 24;
  Fixture f = load("llama2", 64, 16, 16);
  EngineConfig config;
  config.enable_prefix_caching = false;
  auto roomy = make_engine(f, config);
  const auto baseline = alone(*roomy, f, kTokens);
  config.num_kv_pages = 48;  // room for about two long sequences: twelve at once must preempt
  auto tight = make_engine(f, config);
  const auto got = run(*tight, requests(f, 12, kTokens));
  EXPECT_GT(tight->stats().preemptions.load(), 0) << "the pool was meant to run short";
  EXPECT_GE(count_equal(got, baseline, kTokens) * 10, 12 * 8);
  EXPECT_EQ(tight->stats().kv_pages_used.load(), 0);
}

}  // namespace
}  // namespace sieve::cuda_test
