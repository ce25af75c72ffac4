// The KV formats end to end on the default model (SmolLM2-135M) and the golden prompts of
// tests/fixtures/kvpress:
// - the whole model per format, teacher-forced on transformers' greedy continuation: greedy
//   agreement with f32 and the largest logit error, each within its format's bound;
// - the engine: requests of different formats in one batch produce the tokens each produces
//   alone, with an eviction policy (snapkv) too, and hold the bytes their format takes.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"
#include "models/model_loader.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"
#include "tests/support/default_model.h"
#include "tests/support/paged_sequence.h"

namespace sieve::engine {
namespace {

namespace fs = std::filesystem;
using kvcache::KvFormatId;
using nlohmann::json;

using test_support::DefaultModel;

// f32 weights: the KV format is the only approximation under test.
DefaultModel& default_model() {
  static DefaultModel* m = new DefaultModel(test_support::load_default_model({256, 8, 1 << 14}));
  return *m;
}

json fixture(const std::string& name) {
  std::ifstream in(fs::path(SIEVE_SOURCE_DIR) / "tests/fixtures/kvpress" / (name + ".json"));
  SIEVE_CHECK(in) << name;
  return json::parse(in);
}

const char* const kPrompts[] = {"chat_facts", "chat_system", "plain_text"};

// Every row of logits of a teacher-forced run: the prompt (in chunks), then each given token.
std::vector<std::vector<float>> teacher_forced(KvFormatId format,
                                               const std::vector<int32_t>& prompt,
                                               const std::vector<int32_t>& continuation) {
  DefaultModel& m = default_model();
  const int vocab = m.model->config().vocab_size;
  test_support::PagedSequence seq(*m.model, *m.backend,
                                  static_cast<int>(prompt.size() + continuation.size()), format);
  const int chunk = m.model->max_num_tokens();
  const float* logits = nullptr;
  for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
    const size_t end = std::min(prompt.size(), begin + chunk);
    logits = seq.step(std::vector<int32_t>(prompt.begin() + begin, prompt.begin() + end),
                      static_cast<int>(prompt.size()));
  }
  std::vector<std::vector<float>> rows{std::vector<float>(logits, logits + vocab)};
  for (size_t i = 0; i + 1 < continuation.size(); ++i) {
    logits = seq.step({continuation[i]});
    rows.emplace_back(logits, logits + vocab);
  }
  return rows;
}

int argmax(const std::vector<float>& row) {
  return static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
}

TEST(KvFormatsModel, EachFormatStaysWithinItsBoundOfF32) {
  // Bounds over the three prompts' steps (70 in all), measured on the CPU (2026-12-07):
  //   bf16 0.986 / 0.135, fp8_e4m3 0.971 / 2.42, int8 0.957 / 0.76, int4 0.900 / 7.16
  // (greedy agreement / largest logit error); one step is 1.4 points of agreement.
  struct Bound {
    KvFormatId format;
    double min_agreement;  // greedy tokens equal to f32's, as a fraction of the steps
    double max_logit_error;
  };
  const Bound bounds[] = {{KvFormatId::kBF16, 0.95, 0.3},
                          {KvFormatId::kFp8E4M3, 0.93, 3.5},
                          {KvFormatId::kInt8, 0.93, 1.5},
                          {KvFormatId::kInt4, 0.85, 10.0}};
  std::map<KvFormatId, std::pair<int, double>> agree_and_error;
  int steps = 0;
  for (const char* name : kPrompts) {
    const json f = fixture(name);
    const std::vector<int32_t> prompt = f["prompt"]["token_ids"];
    const std::vector<int32_t> greedy = f["reference_logits"]["greedy_24"];
    const auto reference = teacher_forced(KvFormatId::kF32, prompt, greedy);
    // The f32 cache reproduces transformers' greedy continuation.
    for (size_t i = 0; i < greedy.size(); ++i) {
      ASSERT_EQ(argmax(reference[i]), greedy[i]) << name << " step " << i;
    }
    steps += static_cast<int>(greedy.size());
    for (const Bound& b : bounds) {
      const auto rows = teacher_forced(b.format, prompt, greedy);
      auto& [agree, error] = agree_and_error[b.format];
      for (size_t i = 0; i < rows.size(); ++i) {
        agree += argmax(rows[i]) == argmax(reference[i]);
        for (size_t v = 0; v < rows[i].size(); ++v) {
          error = std::max(error, static_cast<double>(std::fabs(rows[i][v] - reference[i][v])));
        }
      }
    }
  }
  std::printf("format     greedy agreement  max |logit - f32|   (%d steps, 3 prompts)\n", steps);
  for (const Bound& b : bounds) {
    const auto& [agree, error] = agree_and_error[b.format];
    const double agreement = static_cast<double>(agree) / steps;
    std::printf("%-10s %16.3f  %17.4f\n", std::string(kvcache::kv_format(b.format).name).c_str(),
                agreement, error);
    EXPECT_GE(agreement, b.min_agreement) << kvcache::kv_format(b.format).name;
    EXPECT_LE(error, b.max_logit_error) << kvcache::kv_format(b.format).name;
  }
}

std::unique_ptr<Engine> make_engine() {
  EngineConfig config;
  config.max_num_batched_tokens = 256;
  config.max_num_seqs = 8;
  config.kv_cache_bytes = 64 << 20;
  config.enable_prefix_caching = false;
  auto engine =
      Engine::create(*default_model().model, *default_model().backend, nullptr, {}, config);
  SIEVE_CHECK(engine.ok()) << engine.status();
  return *std::move(engine);
}

struct Outcome {
  std::vector<int32_t> tokens;
  Usage usage;
  std::string error;
};

std::vector<Outcome> run(Engine& engine, const std::vector<Request>& requests) {
  std::vector<std::shared_ptr<OutputStream>> streams;
  for (const Request& r : requests) {
    auto stream = engine.add_request(r);
    SIEVE_CHECK(stream.ok()) << stream.status();
    streams.push_back(*stream);
  }
  while (engine.has_work()) engine.step();
  std::vector<Outcome> out(streams.size());
  for (size_t i = 0; i < streams.size(); ++i) {
    while (auto o = streams[i]->next(std::chrono::milliseconds(0))) {
      out[i].tokens.insert(out[i].tokens.end(), o->token_ids.begin(), o->token_ids.end());
      if (!o->error.empty()) out[i].error = o->error;
      if (o->finished_request) out[i].usage = o->usage;
    }
  }
  return out;
}

Request request(const std::vector<int32_t>& prompt, const std::string& format,
                const std::string& method) {
  Request r;
  r.prompt_token_ids = prompt;
  r.params.temperature = 0;
  r.params.max_tokens = 12;
  r.params.ignore_eos = true;
  json c = {{"method", method}, {"kv_format", format}};
  if (method != "none") c["keep_ratio"] = 0.5, c["params"] = {{"interval", 0}};
  auto spec = kvcache::parse_compression(c);
  SIEVE_CHECK(spec.ok()) << spec.status();
  r.compression = std::make_shared<const kvcache::CompressionSpec>(*std::move(spec));
  return r;
}

TEST(KvFormatsEngine, AMixedBatchGivesEachRequestItsTokensAlone) {
  const std::vector<int32_t> full = fixture("chat_facts")["prompt"]["token_ids"];
  const std::vector<int32_t> prompt(full.begin(), full.begin() + 160);
  std::vector<Request> requests;
  std::vector<std::string> labels;
  for (const char* method : {"none", "snapkv"}) {
    for (const char* format : {"f32", "bf16", "fp8_e4m3", "int8", "int4"}) {
      requests.push_back(request(prompt, format, method));
      labels.push_back(std::string(format) + " " + method);
    }
  }
  auto engine = make_engine();
  std::vector<Outcome> alone;
  for (const Request& r : requests) alone.push_back(run(*engine, {r})[0]);
  const std::vector<Outcome> together = run(*engine, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(labels[i]);
    EXPECT_EQ(alone[i].error, "");
    ASSERT_EQ(alone[i].tokens.size(), 12u);
    EXPECT_EQ(together[i].tokens, alone[i].tokens);
    EXPECT_EQ(together[i].usage.kv_bytes, alone[i].usage.kv_bytes);
  }
  // Each request holds the pages its format needs: 160 + 12 - 1 tokens written, in pages of
  // 16 bf16 tokens' bytes (the engine's default page_tokens).
  const models::ModelConfig& c = default_model().model->config();
  const kvcache::KvGeometry geometry{c.num_layers, c.num_kv_heads, c.head_dim};
  const size_t page_bytes = 16 * kvcache::kv_format(KvFormatId::kBF16).bytes_per_token(geometry);
  const KvFormatId formats[] = {KvFormatId::kF32, KvFormatId::kBF16, KvFormatId::kFp8E4M3,
                                KvFormatId::kInt8, KvFormatId::kInt4};
  for (int i = 0; i < 5; ++i) {
    const int tpp = kvcache::tokens_per_page(page_bytes, formats[i], geometry);
    EXPECT_EQ(alone[i].usage.kv_bytes, static_cast<int64_t>((171 + tpp - 1) / tpp * page_bytes))
        << labels[i];
  }
  EXPECT_LT(alone[4].usage.kv_bytes * 2, alone[1].usage.kv_bytes);  // int4 < half of bf16
  // The unquantized formats agree with each other on the greedy tokens (bf16 rounds little).
  EXPECT_EQ(alone[1].tokens, alone[0].tokens);
}

TEST(KvFormatsEngine, AnUnknownFormatIsRefusedByName) {
  json c = {{"method", "none"}, {"kv_format", "int3"}};
  auto spec = kvcache::parse_compression(c);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().message().rfind("compression.kv_format", 0), 0u) << spec.status();
}

}  // namespace
}  // namespace sieve::engine
