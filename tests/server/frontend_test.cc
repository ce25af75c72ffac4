// The frontend over a real engine (the tiny SmolLM2-shaped golden fixture, stepped by the test):
// the --max-queue limit, refusal while shutting down, a dropped request aborted with its pages
// freed, abort_all, and the metrics a finished request leaves.

#include "server/frontend.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>

#include "kernels/cpu/cpu_backend.h"
#include "models/model_loader.h"
#include "models/weights.h"

namespace sieve::server {
namespace {

namespace fs = std::filesystem;

struct Fixture {
  std::unique_ptr<kernels::Backend> backend = kernels::cpu::make_cpu_backend();
  std::unique_ptr<models::Transformer> model;
  std::unique_ptr<engine::Engine> engine;
  ModelContext context;
};

std::unique_ptr<Fixture> make_fixture() {
  auto f = std::make_unique<Fixture>();
  const fs::path dir = fs::path(SIEVE_SOURCE_DIR) / "tests/fixtures/golden/smollm2";
  auto files = models::load_model_files(dir.string(), models::LoadFormat::kAuto);
  SIEVE_CHECK(files.ok()) << files.status();
  auto weights = models::build_weights(files->config, files->tensors, *f->backend, dir.string());
  SIEVE_CHECK(weights.ok()) << weights.status();
  auto model = models::Transformer::create(files->config, *std::move(weights), *f->backend,
                                           {256, 8, 1 << 14});
  SIEVE_CHECK(model.ok()) << model.status();
  f->model = *std::move(model);
  engine::EngineConfig config;
  config.max_num_batched_tokens = 256;
  config.max_num_seqs = 8;
  config.kv_cache_bytes = 8 << 20;
  auto engine = engine::Engine::create(*f->model, *f->backend, nullptr, {}, config);
  SIEVE_CHECK(engine.ok()) << engine.status();
  f->engine = *std::move(engine);
  f->context.served_model_names = {"tiny"};
  f->context.config = files->config;
  f->context.max_model_len = f->engine->max_model_len();
  return f;
}

engine::Request request(int max_tokens) {
  engine::Request r;
  r.prompt_token_ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  return r;
}

std::vector<engine::Request> one(int max_tokens) {
  std::vector<engine::Request> v;
  v.push_back(request(max_tokens));
  return v;
}

// Steps the engine until `t` yields an output; returns it.
engine::RequestOutput step_until_output(engine::Engine& engine, TrackedRequest& t) {
  for (int i = 0; i < 1000; ++i) {
    engine.step();
    if (auto out = t.next(std::chrono::milliseconds(0))) return *out;
  }
  ADD_FAILURE() << "no output";
  return {};
}

TEST(Frontend, RefusesPastMaxQueueAtOnceAndAdmitsOnceTheQueueMoves) {
  auto f = make_fixture();
  Frontend frontend(*f->engine, f->context, /*max_queue=*/1);
  const auto now = std::chrono::steady_clock::now();
  auto a = frontend.submit(one(8), "a", now);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = frontend.submit(one(8), "b", now);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  step_until_output(*f->engine, *a->front());  // a's first token: it no longer waits
  b = frontend.submit(one(8), "b", now);
  EXPECT_TRUE(b.ok()) << b.status();
  EXPECT_NE(frontend.render_metrics().find("sieve:request_rejected_total{model_name=\"tiny\","
                                           "code=\"queue_full\"} 1"),
            std::string::npos);
}

TEST(Frontend, ADroppedRequestIsAbortedAndItsPagesFreed) {
  auto f = make_fixture();
  Frontend frontend(*f->engine, f->context, 0);
  auto tracked = frontend.submit(one(64), "dropped", std::chrono::steady_clock::now());
  ASSERT_TRUE(tracked.ok());
  step_until_output(*f->engine, *tracked->front());
  EXPECT_GT(f->engine->stats().kv_pages_used.load(), 0);
  EXPECT_EQ(frontend.num_in_flight(), 1);
  tracked->clear();  // the client went away
  EXPECT_EQ(frontend.num_in_flight(), 0);
  f->engine->step();
  EXPECT_EQ(f->engine->stats().kv_pages_used.load(), 0);
  EXPECT_NE(frontend.render_metrics().find("finished_reason=\"abort\"} 1"), std::string::npos);
}

TEST(Frontend, AbortAllEndsEveryStreamWithAbort) {
  auto f = make_fixture();
  Frontend frontend(*f->engine, f->context, 0);
  std::vector<engine::Request> two = one(64);
  two.push_back(request(64));
  auto tracked = frontend.submit(std::move(two), "pair", std::chrono::steady_clock::now());
  ASSERT_TRUE(tracked.ok());
  ASSERT_EQ(tracked->size(), 2u);
  f->engine->step();
  frontend.begin_shutdown();
  auto refused = frontend.submit(one(4), "late", std::chrono::steady_clock::now());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  frontend.abort_all();
  for (auto& t : *tracked) {
    std::string finish;
    for (int i = 0; i < 100 && !t->finished(); ++i) {
      f->engine->step();
      while (auto out = t->next(std::chrono::milliseconds(0))) {
        if (out->finished_request) finish = *out->finish_reason;
      }
    }
    EXPECT_EQ(finish, "abort");
  }
  EXPECT_EQ(frontend.num_in_flight(), 0);
  EXPECT_EQ(f->engine->stats().kv_pages_used.load(), 0);
}

TEST(Frontend, AFinishedRequestLeavesItsLatenciesInTheMetrics) {
  auto f = make_fixture();
  Frontend frontend(*f->engine, f->context, 0);
  auto tracked = frontend.submit(one(4), "done", std::chrono::steady_clock::now());
  ASSERT_TRUE(tracked.ok());
  TrackedRequest& t = *tracked->front();
  int tokens = 0;
  while (!t.finished()) {
    const engine::RequestOutput out = step_until_output(*f->engine, t);
    tokens += static_cast<int>(out.token_ids.size());
  }
  EXPECT_EQ(tokens, 4);
  const std::string text = frontend.render_metrics();
  for (const char* line :
       {"sieve:request_success_total{model_name=\"tiny\",finished_reason=\"length\"} 1",
        "sieve:time_to_first_token_seconds_count{model_name=\"tiny\"} 1",
        "sieve:inter_token_latency_seconds_count{model_name=\"tiny\"} 3",
        "sieve:e2e_request_latency_seconds_count{model_name=\"tiny\"} 1",
        "sieve:request_queue_time_seconds_count{model_name=\"tiny\"} 1",
        "sieve:request_generation_tokens_sum{model_name=\"tiny\"} 4",
        "sieve:prefix_cache_queries_total{model_name=\"tiny\"} 17"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
}

TEST(Frontend, TheListenerHearsEveryOutputAndWhatWasQueuedBeforeIt) {
  auto f = make_fixture();
  Frontend frontend(*f->engine, f->context, 0);
  auto tracked = frontend.submit(one(3), "listened", std::chrono::steady_clock::now());
  ASSERT_TRUE(tracked.ok());
  TrackedRequest& t = *tracked->front();
  f->engine->step();  // prefill and the first token, before anyone listens
  std::atomic<int> calls{0};
  t.set_listener([&] { ++calls; });
  EXPECT_EQ(calls.load(), 1);  // told at once that an output is waiting
  int outputs = 0;
  while (!t.finished()) {
    f->engine->step();
    while (t.next(std::chrono::milliseconds(0))) ++outputs;
  }
  EXPECT_GE(calls.load(), outputs - 1);
  EXPECT_GE(outputs, 4);  // three tokens and the finish
}

}  // namespace
}  // namespace sieve::server
