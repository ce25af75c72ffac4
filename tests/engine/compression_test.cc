// Per-request KV compression in the engine, on the CPU backend with a golden fixture model:
// every policy compacts and keeps generating, methods mix in one batch with each request's
// greedy output equal to the same request run alone, and pages come back after forks, aborts and
// preemptions of compressed sequences. The fixture models have no tokenizer: KVzip's
// reconstruction prompt is given as token ids.

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"
#include "kvcache/policies/registry.h"
#include "nlohmann/json.hpp"
#include "tests/support/engine_harness.h"
#include "tests/support/golden_model.h"

namespace sieve::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Fixture {
  std::unique_ptr<kernels::Backend> backend = kernels::cpu::make_cpu_backend();
  std::unique_ptr<models::Transformer> model;
};

Fixture load(const std::string& name) {
  Fixture f;
  test_support::GoldenModel g = test_support::load_golden_model(
      fs::path(SIEVE_SOURCE_DIR) / "tests/fixtures/golden" / name, *f.backend, {128, 32, 1 << 16});
  f.model = std::move(g.model);
  return f;
}

std::unique_ptr<Engine> make_engine(Fixture& f, int num_kv_pages = 0) {
  EngineConfig config;
  config.num_kv_pages = num_kv_pages;
  auto engine = test_support::make_engine(*f.model, *f.backend, config);
  ReconstructionPrompt kvzip;
  kvzip.available = true;
  kvzip.prefix_length = 3;
  kvzip.first_question = {11, 12, 13, 14};
  kvzip.next_question = {15, 16};
  kvzip.suffix = {17, 18};
  engine->set_reconstruction_prompt(kvzip);
  return engine;
}

std::vector<int32_t> random_prompt(int vocab, int len, int seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> id(3, vocab - 1);
  std::vector<int32_t> ids(len);
  for (int32_t& x : ids) x = id(rng);
  return ids;
}

Request request(const std::vector<int32_t>& prompt, int max_tokens, const json& compression) {
  Request r = test_support::greedy_request(prompt, max_tokens);
  auto spec = kvcache::parse_compression(compression);
  SIEVE_CHECK(spec.ok()) << spec.status();
  if (spec->compresses()) r.compression = std::make_shared<const kvcache::CompressionSpec>(*spec);
  return r;
}

struct Result {
  std::vector<int32_t> tokens;
  Usage usage;
  std::string finish;
};

std::vector<Result> run_all(Engine& engine,
                            const std::vector<std::shared_ptr<OutputStream>>& streams) {
  std::vector<Result> results;
  for (const test_support::RequestResult& r : test_support::run_to_end(engine, streams)) {
    results.push_back({r.all_tokens(), r.usage, r.finish});
  }
  return results;
}

// Every registered policy at prefill end (budget below the prompt) and at decode time (interval
// 32): the request finishes, holds about its budget at its end, and leaves no page behind.
TEST(Compression, EveryPolicyCompactsAndKeepsGenerating) {
  Fixture f = load("llama3");
  const std::vector<int32_t> prompt = random_prompt(f.model->config().vocab_size, 150, 1);
  auto engine = make_engine(f);
  const Result full =
      run_all(*engine, {*engine->add_request(request(prompt, 96, {{"method", "none"}}))})[0];
  EXPECT_EQ(full.usage.kv_tokens_kept, 150 + 96 - 1);
  for (const kvcache::KvPolicy* policy : kvcache::registered_policies()) {
    SCOPED_TRACE(std::string(policy->name()));
    // A prefill-only policy compresses once and then grows by every generated token.
    const int growth = policy->prefill_only() ? 96 - 1 : 32;
    json params = {{"interval", policy->prefill_only() ? 0 : 32}};
    if (policy->name() != "tova" && policy->name() != "streaming_llm") params["window"] = 16;
    const json compression = {{"method", policy->name()}, {"budget", 48}, {"params", params}};
    const Result r = run_all(*engine, {*engine->add_request(request(prompt, 96, compression))})[0];
    EXPECT_EQ(r.finish, "length");
    EXPECT_EQ(r.tokens.size(), 96u);
    // At its end a sequence holds at most budget + interval slots (pyramidkv's first layers hold
    // more, its last fewer; the mean counts, and its rounded layer budgets may add one).
    EXPECT_LE(r.usage.kv_tokens_kept, 48 + growth + (policy->name() == "pyramidkv"))
        << "kept " << r.usage.kv_tokens_kept;
    EXPECT_LT(r.usage.kv_bytes, full.usage.kv_bytes);
    EXPECT_EQ(engine->stats().kv_pages_used.load(), 0);
  }
  EXPECT_GT(engine->compression_stats().actions.load(), 9 * 2);
  EXPECT_EQ(engine->compression_stats().skipped_actions.load(), 0);
}

// 20 requests with 10 methods in one continuously batched run: each request's greedy tokens and
// every decision its policy takes are the ones it produces alone. Several act in the same step,
// so their decisions run on parallel threads (four here, whatever the machine has).
TEST(Compression, MethodsMixInOneBatchAndEachEqualsItsRunAlone) {
  Fixture f = load("qwen2");
  const int vocab = f.model->config().vocab_size;
  const std::vector<json> methods = {
      {{"method", "none"}},
      {{"method", "snapkv"}, {"keep_ratio", 0.5}},
      {{"method", "knorm"}, {"budget", 40}, {"params", {{"interval", 32}}}},
      {{"method", "keydiff"}, {"keep_ratio", 0.25}},
      {{"method", "streaming_llm"}, {"budget", 40}},
      {{"method", "tova"}, {"budget", 50}},
      {{"method", "gkv"}, {"budget", 48}, {"params", {{"interval", 32}}}},
      {{"method", "adakv"}, {"keep_ratio", 0.5}, {"params", {{"interval", 0}}}},
      {{"method", "expected_attention"}, {"keep_ratio", 0.5}, {"params", {{"interval", 32}}}},
      {{"method", "kvzip"}, {"keep_ratio", 0.4}, {"params", {{"chunk_size", 40}}}},
  };
  const int num_requests = 2 * static_cast<int>(methods.size());
  std::vector<Request> requests;
  for (int i = 0; i < num_requests; ++i) {
    requests.push_back(
        request(random_prompt(vocab, 60 + 7 * i, 100 + i), 48, methods[i % methods.size()]));
  }
  // Each run's decisions in order, by request (sequence ids count from 1, one per request).
  using Decisions = std::vector<std::vector<std::vector<int32_t>>>;
  auto record = [&](Engine& engine, std::vector<Decisions>& out) {
    out.assign(num_requests, {});
    engine.set_compression_observer(
        [&out](kvcache::SeqId seq, const std::vector<std::vector<int32_t>>& kept) {
          out.at(seq - 1).push_back(kept);
        });
  };
  std::vector<std::vector<int32_t>> alone;
  std::vector<Decisions> alone_decisions, together_decisions;
  {
    auto engine = make_engine(f);
    record(*engine, alone_decisions);
    for (const Request& r : requests) {
      alone.push_back(run_all(*engine, {*engine->add_request(r)})[0].tokens);
    }
  }
  const int threads = omp_get_max_threads();
  omp_set_num_threads(4);
  auto engine = make_engine(f);
  record(*engine, together_decisions);
  std::vector<std::shared_ptr<OutputStream>> streams;
  for (const Request& r : requests) streams.push_back(*engine->add_request(r));
  const std::vector<Result> together = run_all(*engine, streams);
  omp_set_num_threads(threads);
  int actions = 0;
  for (int i = 0; i < num_requests; ++i) {
    SCOPED_TRACE("request " + std::to_string(i) + ": " + methods[i % methods.size()].dump());
    EXPECT_EQ(together[i].tokens, alone[i]);
    EXPECT_EQ(together[i].tokens.size(), 48u);
    EXPECT_EQ(together_decisions[i], alone_decisions[i]);
    actions += static_cast<int>(together_decisions[i].size());
  }
  EXPECT_GE(actions, 18);  // every compressing request acted (interval 32 ones twice)
  EXPECT_EQ(engine->compression_stats().skipped_actions.load(), 0);
  EXPECT_EQ(engine->stats().kv_pages_used.load(), 0);
}

// Fair eviction: a prompt in three marked segments. By knorm's scores alone some (layer, KV head)
// rows keep a segment far beyond or below its share (checked, so the test can tell); with fair
// eviction every row keeps each segment's share of the budget.
TEST(Compression, FairEvictionKeepsEverySegmentsShare) {
  Fixture f = load("llama3");
  const std::vector<int32_t> prompt = random_prompt(f.model->config().vocab_size, 150, 4);
  auto engine = make_engine(f);
  std::vector<std::vector<int32_t>> kept;
  engine->set_compression_observer(
      [&](kvcache::SeqId, const std::vector<std::vector<int32_t>>& positions) {
        kept = positions;
      });
  const json params = {{"sink", 4}, {"window", 16}, {"interval", 0}};
  for (bool fair : {false, true}) {
    SCOPED_TRACE(fair ? "fair" : "by score");
    json compression = {{"method", "knorm"}, {"budget", 48}, {"params", params}};
    if (fair) {
      compression["fair_eviction"] = true;
      compression["segments"] = {{0, 30}, {30, 90}, {90, 150}};
    }
    kept.clear();
    const Result r = run_all(*engine, {*engine->add_request(request(prompt, 4, compression))})[0];
    EXPECT_EQ(r.tokens.size(), 4u);
    ASSERT_FALSE(kept.empty());
    int off_share = 0;
    for (const std::vector<int32_t>& row : kept) {
      ASSERT_EQ(row.size(), 48u);
      int counts[3] = {0, 0, 0};
      for (int32_t p : row) ++counts[p < 30 ? 0 : p < 90 ? 1 : 2];
      // Shares of 48 for 30, 60 and 60 tokens: 9.6, 19.2, 19.2 (the sinks and the window of 16
      // fit within theirs).
      const bool fair_split = std::abs(counts[0] - 9.6) <= 1 && std::abs(counts[1] - 19.2) <= 1 &&
                              std::abs(counts[2] - 19.2) <= 1;
      if (fair) {
        EXPECT_TRUE(fair_split) << counts[0] << " " << counts[1] << " " << counts[2];
      }
      off_share += !fair_split;
    }
    if (!fair) {
      EXPECT_GT(off_share, 0) << "scores alone happened to split fairly: a weak test";
    }
  }
  EXPECT_EQ(engine->stats().kv_pages_used.load(), 0);
}

// Parallel samples fork after the prompt; preemption drops a compacted cache and recomputes it.
TEST(Compression, ForksAndPreemptionsKeepTheAccounting) {
  Fixture f = load("llama3");
  const int vocab = f.model->config().vocab_size;
  for (const char* method : {"snapkv", "expected_attention"}) {
    SCOPED_TRACE(method);
    auto engine = make_engine(f);
    Request r = request(random_prompt(vocab, 120, 7), 40,
                        {{"method", method}, {"budget", 40}, {"params", {{"interval", 32}}}});
    r.params.n = 3;
    r.params.temperature = 1.0f;
    r.params.seed = 5;
    const Result result = run_all(*engine, {*engine->add_request(r)})[0];
    EXPECT_EQ(result.tokens.size(), 3u * 40);
    EXPECT_LE(result.usage.kv_tokens_kept, 3 * (40 + 32));
    EXPECT_EQ(engine->stats().kv_pages_used.load(), 0);
    EXPECT_EQ(engine->compression_stats().skipped_actions.load(), 0);
  }
  {
    // A pool too small for all of them at full length: some are preempted and recomputed.
    // Admission reserves pages for the snapkv ones (compacted every 32 tokens); the others
    // compress only at prefill end, then grow unreserved, as uncompressed ones do.
    auto engine = make_engine(f, /*num_kv_pages=*/40);
    std::vector<std::shared_ptr<OutputStream>> streams;
    const char* methods[] = {"snapkv", "knorm", "expected_attention"};
    for (int i = 0; i < 10; ++i) {
      const bool decode_time = i % 3 == 0;
      streams.push_back(
          *engine->add_request(request(random_prompt(vocab, 90, 20 + i), 64,
                                       {{"method", methods[i % 3]},
                                        {"budget", 32},
                                        {"params", {{"interval", decode_time ? 32 : 0}}}})));
    }
    for (const Result& r : run_all(*engine, streams)) {
      EXPECT_EQ(r.finish, "length");
      EXPECT_EQ(r.tokens.size(), 64u);
    }
    EXPECT_GT(engine->stats().preemptions.load(), 0) << "the pool was meant to run short";
    EXPECT_EQ(engine->stats().kv_pages_used.load(), 0);
  }
}

// KVzip's reconstruction pass borrows pages after the sequence's own; in a pool without them its
// action is skipped and counted, and the request runs on uncompressed (its tokens those of a
// request without compression), nothing borrowed left behind. With room, it compresses.
TEST(Compression, KvzipWithoutRoomForItsReconstructionSkipsCleanly) {
  Fixture f = load("llama3");
  const std::vector<int32_t> prompt = random_prompt(f.model->config().vocab_size, 90, 9);
  const json kvzip = {{"method", "kvzip"}, {"keep_ratio", 0.3}};
  std::vector<int32_t> uncompressed;
  {
    auto engine = make_engine(f);
    uncompressed =
        run_all(*engine, {*engine->add_request(request(prompt, 8, {{"method", "none"}}))})[0]
            .tokens;
    const Result r = run_all(*engine, {*engine->add_request(request(prompt, 8, kvzip))})[0];
    EXPECT_EQ(engine->compression_stats().actions.load(), 1);
    EXPECT_EQ(engine->compression_stats().skipped_actions.load(), 0);
    EXPECT_LT(r.usage.kv_tokens_kept, 40);
    EXPECT_EQ(engine->stats().kv_pages_used.load(), 0);
  }
  // 8 tokens a page: the 90-token prompt takes 12 of the 16 pages; its reconstruction (4 + 2 +
  // 87 repeated tokens) would need 12 more.
  auto engine = make_engine(f, /*num_kv_pages=*/16);
  const Result r = run_all(*engine, {*engine->add_request(request(prompt, 8, kvzip))})[0];
  EXPECT_EQ(r.tokens, uncompressed);
  EXPECT_EQ(r.usage.kv_tokens_kept, 90 + 8 - 1);
  EXPECT_EQ(engine->compression_stats().actions.load(), 0);
  EXPECT_EQ(engine->compression_stats().skipped_actions.load(), 1);
  EXPECT_EQ(engine->stats().kv_pages_used.load(), 0);
  EXPECT_EQ(engine->stats().kv_pages_total.load(), 16);
}

// Admission counts a compressed sequence by what it holds once compressed (budget + interval):
// short prompts that grow to their budget run several at once and are never preempted, where
// admission by the prompt's pages alone would admit them all and preempt as they grow.
TEST(Compression, AdmissionReservesTheCompressedFootprint) {
  Fixture f = load("llama3");
  const int vocab = f.model->config().vocab_size;
  auto engine = make_engine(f, /*num_kv_pages=*/40);
  const json compression = {
      {"method", "streaming_llm"}, {"budget", 48}, {"params", {{"interval", 16}, {"window", 8}}}};
  std::vector<std::shared_ptr<OutputStream>> streams;
  for (int i = 0; i < 12; ++i) {
    streams.push_back(
        *engine->add_request(request(random_prompt(vocab, 8, 40 + i), 120, compression)));
  }
  int max_running = 0;
  for (int guard = 0; engine->has_work() && guard < 100000; ++guard) {
    engine->step();
    max_running = std::max(max_running, engine->stats().num_running.load());
  }
  for (const Result& r : run_all(*engine, streams)) {
    EXPECT_EQ(r.finish, "length");
    EXPECT_EQ(r.tokens.size(), 120u);
  }
  EXPECT_EQ(engine->stats().preemptions.load(), 0);
  // 128 tokens uncompressed take 128 / tokens_per_page pages each: 40 pages hold 2 of them
  // at full length (tokens_per_page is 8 for the CPU's f32 pages); compressed ones hold 48 + 16.
  EXPECT_GE(max_running, 4);
  EXPECT_EQ(engine->stats().kv_pages_used.load(), 0);
}

}  // namespace
}  // namespace sieve::engine
