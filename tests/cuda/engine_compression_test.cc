// KV compression in the engine on the GPU, on the golden fixtures: requests with a policy
// (SnapKV's window attention, KnormPress's key norms, KeyDiff's anchor dot, G-KV's group max and
// anchor dot with decode-time actions, KVzip's reconstruction pass and its running max) run to
// the end among uncompressed ones, keep fewer KV
// tokens than without compression, leak no page, and follow the CPU engine; and the model
// captures the queries the policies score with as the CPU model does.
//
// The CPU engine (f32 weights, activations and cache) is the reference, but not a bit-exact one:
// the GPU's keys, values and queries are bf16, so a policy's scores differ by about 1e-2 and the
// slots at its budget's edge may differ (on the same cache the decisions agree:
// signals_test.cc), and these small random models have near-tied logits (uncompressed greedy
// tokens already part from the CPU's, golden_test.cc). So: the kept counts are exact (a policy
// keeps its budget whatever it picks); the tokens are compared where the uncompressed ones agree,
// at least half must agree (a wrong compaction on the GPU would part at the first token after
// it), and every first divergence is printed beside the uncompressed one.

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"
#include "kvcache/policies/spec.h"
#include "models/transformer_runner.h"
#include "nlohmann/json.hpp"
#include "tests/cuda/test_util.h"
#include "tests/support/golden_model.h"

namespace sieve::cuda_test {
namespace {

using engine::Engine;
using engine::EngineConfig;
using engine::Request;

constexpr int kMaxTokens = 24;

struct Result {
  std::vector<int32_t> tokens;
  int kv_tokens_kept = -1;
};

struct Side {
  kernels::Backend* backend;
  std::unique_ptr<models::Transformer> model;
  std::unique_ptr<Engine> engine;
};

// Graph buckets on the GPU, so uncompressed decode steps replay graphs between the eager ones
// that capture queries or read a compacted sequence.
Side make_side(kernels::Backend& backend, const std::string& name, bool graphs,
               std::vector<std::vector<int32_t>>* prompts) {
  Side s{&backend, nullptr, nullptr};
  test_support::GoldenModel g = test_support::load_golden_model(
      golden_dir() / name, backend, {256, 16, 1 << 12, graphs ? 16 : 0});
  s.model = std::move(g.model);
  if (prompts) {
    for (test_support::GoldenCase& c : g.cases) prompts->push_back(std::move(c.prompt));
  }
  EngineConfig config;
  config.max_num_batched_tokens = 256;  // the 300-token prompt takes two chunks
  config.max_num_seqs = 16;
  config.kv_cache_bytes = 16 << 20;
  auto engine = Engine::create(*s.model, backend, nullptr, {}, config);
  SIEVE_CHECK(engine.ok()) << engine.status();
  s.engine = *std::move(engine);
  // The fixtures have no tokenizer: KVzip's reconstruction prompt as token ids.
  engine::ReconstructionPrompt kvzip;
  kvzip.available = true;
  kvzip.prefix_length = 3;
  kvzip.first_question = {11, 12, 13, 14};
  kvzip.next_question = {15, 16};
  kvzip.suffix = {17, 18};
  s.engine->set_reconstruction_prompt(kvzip);
  return s;
}

std::shared_ptr<const kvcache::CompressionSpec> spec(const std::string& json) {
  auto parsed = kvcache::parse_compression(nlohmann::json::parse(json));
  SIEVE_CHECK(parsed.ok()) << parsed.status();
  return std::make_shared<const kvcache::CompressionSpec>(*std::move(parsed));
}

Request greedy(const std::vector<int32_t>& prompt,
               std::shared_ptr<const kvcache::CompressionSpec> compression) {
  Request r;
  r.prompt_token_ids = prompt;
  r.params.temperature = 0;
  r.params.max_tokens = kMaxTokens;
  r.params.ignore_eos = true;
  r.compression = std::move(compression);
  return r;
}

// Runs the requests together to the end: each one's tokens and final usage.
std::vector<Result> run(Engine& engine, const std::vector<Request>& requests) {
  std::vector<std::shared_ptr<engine::OutputStream>> streams;
  for (const Request& r : requests) {
    auto stream = engine.add_request(r);
    SIEVE_CHECK(stream.ok()) << stream.status();
    streams.push_back(*stream);
  }
  int guard = 0;
  while (engine.has_work() && ++guard < 100000) engine.step();
  std::vector<Result> out(streams.size());
  for (size_t i = 0; i < streams.size(); ++i) {
    while (auto chunk = streams[i]->next(std::chrono::milliseconds(0))) {
      out[i].tokens.insert(out[i].tokens.end(), chunk->token_ids.begin(), chunk->token_ids.end());
      EXPECT_TRUE(chunk->error.empty()) << chunk->error;
      if (chunk->finished_request) out[i].kv_tokens_kept = chunk->usage.kv_tokens_kept;
    }
  }
  return out;
}

int first_difference(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return i == a.size() && i == b.size() ? -1 : static_cast<int>(i);
}

TEST(CudaEngineCompression, CompressedRequestsKeepFewerTokensAndMatchTheCpuEngine) {
  SIEVE_GPU_OR_SKIP();
  const std::vector<std::string> methods = {
      R"({"method": "snapkv", "keep_ratio": 0.5})",
      R"({"method": "knorm", "budget": 40})",
      R"({"method": "keydiff", "budget": 48})",
      R"({"method": "gkv", "budget": 40, "params": {"interval": 16}})",
      R"({"method": "kvzip", "keep_ratio": 0.5, "params": {"chunk_size": 100}})",
  };
  std::unique_ptr<kernels::Backend> cpu = kernels::cpu::make_cpu_backend();
  std::printf("[ compress ] %-8s %-8s %6s %13s %13s %s\n", "fixture", "method", "prompt",
              "kept gpu/cpu", "full gpu/cpu", "first difference gpu-cpu: compressed, full");
  int comparable = 0, matching = 0;
  for (const char* name : {"llama3", "qwen3", "smollm2"}) {
    SCOPED_TRACE(name);
    std::vector<std::vector<int32_t>> all_prompts;
    Side gpu_side = make_side(*gpu_backend, name, /*graphs=*/true, &all_prompts);
    Side cpu_side = make_side(*cpu, name, /*graphs=*/false, nullptr);
    // The 64- and 300-token prompts (over every budget) and the 7-token one (under it).
    const std::vector<std::vector<int32_t>> prompts = {all_prompts[1], all_prompts[2],
                                                       all_prompts[3]};
    std::vector<Request> requests;
    for (const auto& prompt : prompts) requests.push_back(greedy(prompt, nullptr));
    for (const std::string& m : methods) {
      for (const auto& prompt : prompts) requests.push_back(greedy(prompt, spec(m)));
    }
    const int64_t actions_before = gpu_side.engine->compression_stats().actions.load();
    // All together on the GPU: compressed and uncompressed sequences share steps.
    const std::vector<Result> gpu_batch = run(*gpu_side.engine, requests);
    EXPECT_EQ(gpu_side.engine->stats().kv_pages_used.load(), 0) << "pages leaked";
    EXPECT_GT(gpu_side.engine->compression_stats().actions.load(), actions_before);
    EXPECT_EQ(gpu_side.engine->compression_stats().skipped_actions.load(), 0);
    // One at a time on both engines.
    std::vector<Result> gpu_alone, cpu_alone;
    for (const Request& r : requests) {
      gpu_alone.push_back(run(*gpu_side.engine, {r})[0]);
      cpu_alone.push_back(run(*cpu_side.engine, {r})[0]);
    }
    EXPECT_EQ(gpu_side.engine->stats().kv_pages_used.load(), 0) << "pages leaked";
    EXPECT_EQ(cpu_side.engine->stats().kv_pages_used.load(), 0) << "pages leaked (CPU)";
    int batch_equal = 0;
    for (size_t i = 0; i < requests.size(); ++i) {
      const size_t p = i % prompts.size();
      const std::string method =
          i < prompts.size()
              ? "none"
              : nlohmann::json::parse(methods[i / prompts.size() - 1])["method"].get<std::string>();
      SCOPED_TRACE(::testing::Message() << method << ", prompt of " << prompts[p].size());
      const Result& g = gpu_alone[i];
      const Result& c = cpu_alone[i];
      const Result& g_full = gpu_alone[p];
      const Result& c_full = cpu_alone[p];
      EXPECT_EQ(g.tokens.size(), static_cast<size_t>(kMaxTokens));
      EXPECT_EQ(gpu_batch[i].tokens.size(), static_cast<size_t>(kMaxTokens));
      EXPECT_EQ(gpu_batch[i].kv_tokens_kept, g.kv_tokens_kept);
      batch_equal += gpu_batch[i].tokens == g.tokens;
      EXPECT_EQ(g.kv_tokens_kept, c.kv_tokens_kept);
      const int full_kept = static_cast<int>(prompts[p].size()) + kMaxTokens - 1;
      EXPECT_EQ(g_full.kv_tokens_kept, full_kept);
      // Every prompt but the 7-token one is over every budget.
      if (i >= prompts.size() && prompts[p].size() > 40) {
        EXPECT_LT(g.kv_tokens_kept, full_kept);
      }
      const int diff = first_difference(g.tokens, c.tokens);
      const int full_diff = first_difference(g_full.tokens, c_full.tokens);
      std::printf("[ compress ] %-8s %-8s %6zu %6d/%-6d %6d/%-6d %d, %d\n", name, method.c_str(),
                  prompts[p].size(), g.kv_tokens_kept, c.kv_tokens_kept, g_full.kv_tokens_kept,
                  c_full.kv_tokens_kept, diff, full_diff);
      if (i >= prompts.size() && full_diff < 0) {
        ++comparable;
        matching += diff < 0;
      }
    }
    // Batched and alone on the GPU: other GEMM shapes, so bf16 may flip a near-tie.
    EXPECT_GE(batch_equal, static_cast<int>(requests.size()) * 3 / 4);
  }
  std::printf("[ compress ] compressed runs equal to the CPU's where the full ones are: %d of %d\n",
              matching, comparable);
  EXPECT_GE(matching * 2, comparable);
}

// The model keeps the post-RoPE queries of the rows a step captures (StepBatch::capture_rows, out
// of the fused QKV buffer by copy_rows) in the store rows it names, on the GPU as on the CPU:
// within bf16 activations' tolerance of the CPU model's (a pre-RoPE or misplaced row would be off
// by O(1)), and no store row beyond those named is written. Two prompt chunks, the second over
// the first's cache; qwen3 normalizes q before RoPE, smollm2 has 3 query heads a KV head.
TEST(CudaEngineCompression, ModelCapturesTheQueriesTheCpuModelCaptures) {
  SIEVE_GPU_OR_SKIP();
  std::unique_ptr<kernels::Backend> cpu = kernels::cpu::make_cpu_backend();
  constexpr int kStoreRows = 64, kUsedRows = 60, kTokensPerPage = 16;
  for (const char* name : {"llama3", "qwen3", "smollm2"}) {
    SCOPED_TRACE(name);
    std::vector<Tensor> stores;
    stores.reserve(2);
    std::vector<int32_t> prompt;
    for (kernels::Backend* backend : {gpu_backend, cpu.get()}) {
      test_support::GoldenModel g =
          test_support::load_golden_model(golden_dir() / name, *backend, {256, 4, 1 << 12, 0});
      prompt = g.cases[3].prompt;  // 300 tokens; the first 200 run
      const models::ModelConfig& c = g.model->config();
      const DType dtype = backend->compute_dtype();
      stores.push_back(poisoned(*backend, dtype, {c.num_layers, kStoreRows, c.q_dim()}));
      g.model->set_query_store(stores.back());
      const kernels::KvCacheLayout layout{
          c.num_layers, c.num_kv_heads, c.head_dim, kTokensPerPage, 200 / kTokensPerPage + 1,
          dtype,        std::nullopt,   0};
      auto arena = backend->allocate(DType::kU8, {static_cast<int64_t>(layout.arena_bytes())});
      ASSERT_TRUE(arena.ok()) << arena.status();
      auto runner = models::TransformerRunner::create(*g.model);
      ASSERT_TRUE(runner.ok()) << runner.status();
      (*runner)->bind_kv_cache(*arena, layout);
      // Chunk [begin, end) captures positions [first, last) into store rows from `slot`.
      auto chunk = [&](int begin, int end, int first, int last, int slot) {
        models::StepBatch b;
        for (int pos = begin; pos < end; ++pos) {
          b.token_ids.push_back(prompt[pos]);
          b.positions.push_back(pos);
          b.slot_mapping.push_back(pos);  // pages in order
        }
        b.qo_indptr = {0, end - begin};
        const int pages = (end + kTokensPerPage - 1) / kTokensPerPage;
        for (int p = 0; p < pages; ++p) b.kv_indices.push_back(p);
        b.kv_indptr = {0, pages};
        b.kv_lens = {end};
        b.logits_indices = {end - begin - 1};
        for (int pos = first; pos < last; ++pos) {
          b.capture_rows.push_back(pos - begin);
          b.capture_slots.push_back(slot++);
        }
        (*runner)->execute(b);
      };
      chunk(0, 120, 100, 120, 0);     // store rows 0..19
      chunk(120, 200, 150, 190, 20);  // store rows 20..59
      backend->synchronize();
    }
    const Tensor got = download(*gpu_backend, stores[0]);
    const Tensor& want = stores[1];
    const int64_t layers = got.size(0), q_dim = got.size(2);
    std::vector<float> g_used, w_used;
    int64_t stray = 0;
    for (int64_t l = 0; l < layers; ++l) {
      for (int64_t row = 0; row < kStoreRows; ++row) {
        const float* g = got.data<float>() + (l * kStoreRows + row) * q_dim;
        const float* w = want.data<float>() + (l * kStoreRows + row) * q_dim;
        for (int64_t i = 0; i < q_dim; ++i) {
          if (row >= kUsedRows) {
            stray += !std::isnan(g[i]) + !std::isnan(w[i]);
          } else {
            g_used.push_back(g[i]);
            w_used.push_back(w[i]);
          }
        }
      }
    }
    EXPECT_EQ(stray, 0) << "store rows written that no capture named";
    const double error =
        relative_error(g_used.data(), w_used.data(), static_cast<int64_t>(g_used.size()));
    std::printf("[ capture  ] %-8s queries of 60 rows, GPU against CPU: %.2e\n", name, error);
    EXPECT_LT(error, 4e-2);
  }
}

}  // namespace
}  // namespace sieve::cuda_test
