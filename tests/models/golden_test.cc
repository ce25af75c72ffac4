// The CPU backend against the golden fixtures made with Hugging Face transformers
// (tests/fixtures/golden/README.md): logits within 1e-3 relative at every step of every case,
// and greedy continuations equal. Prompts run in chunks of 64 tokens, so long prompts also
// exercise chunked prefill over the paged cache.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"
#include "models/model_loader.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"
#include "tests/support/paged_sequence.h"

namespace sieve::models {
namespace {

namespace fs = std::filesystem;
constexpr int kChunkTokens = 64;

const fs::path kGoldenDir = fs::path(SIEVE_SOURCE_DIR) / "tests" / "fixtures" / "golden";

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  if (!fs::exists(kGoldenDir)) return names;
  for (const auto& entry : fs::directory_iterator(kGoldenDir)) {
    if (fs::exists(entry.path() / "golden.json")) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

double relative_error(const float* got, const float* want, int64_t n) {
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    max_diff = std::max(max_diff, std::abs(double(got[i]) - want[i]));
    max_ref = std::max(max_ref, std::abs(double(want[i])));
  }
  return max_diff / max_ref;
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, LogitsAndGreedyMatchTransformers) {
  const fs::path dir = kGoldenDir / GetParam();
  std::ifstream in(dir / "golden.json");
  const nlohmann::json golden = nlohmann::json::parse(in);
  auto files = load_model_files(dir.string(), LoadFormat::kAuto);
  ASSERT_TRUE(files.ok()) << files.status();
  auto references = load_safetensors_file((dir / "golden_logits.safetensors").string());
  ASSERT_TRUE(references.ok()) << references.status();
  auto backend = kernels::cpu::make_cpu_backend();
  auto weights = build_weights(files->config, files->tensors, *backend, dir.string());
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto model = Transformer::create(files->config, *std::move(weights), *backend,
                                   StepLimits{kChunkTokens, 1, 1024});
  ASSERT_TRUE(model.ok()) << model.status();
  const int vocab = files->config.vocab_size;

  for (const auto& c : golden["cases"]) {
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto greedy = c["greedy_ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE(::testing::Message() << "seed " << c["seed"] << ", prompt " << prompt.size());
    const Tensor& want = references->at(c["logits_key"].get<std::string>());
    ASSERT_EQ(want.size(0), static_cast<int64_t>(greedy.size()) + 1);
    ASSERT_EQ(want.size(1), vocab);

    // Teacher-forced: every step's logits against the reference row.
    test_support::PagedSequence runner(**model, *backend,
                                       static_cast<int>(prompt.size() + greedy.size()));
    const float* logits = nullptr;
    for (size_t begin = 0; begin < prompt.size(); begin += kChunkTokens) {
      const size_t end = std::min(prompt.size(), begin + kChunkTokens);
      logits = runner.step(std::vector<int32_t>(prompt.begin() + begin, prompt.begin() + end),
                           static_cast<int>(prompt.size()));
    }
    for (size_t i = 0; i <= greedy.size(); ++i) {
      const float* row = want.data<float>() + i * vocab;
      EXPECT_LT(relative_error(logits, row, vocab), 1e-3) << "step " << i;
      if (i < greedy.size()) logits = runner.step({greedy[i]});
    }

    // Free-running greedy generation through the engine, where the served context allows it
    // (the dynamic-NTK fixture deliberately runs past it above).
    if (static_cast<int>(prompt.size() + greedy.size()) > files->config.context_length()) continue;
    engine::EngineConfig config;
    config.max_num_batched_tokens = kChunkTokens;
    config.max_num_seqs = 1;
    config.num_kv_pages = 64;
    auto engine = engine::Engine::create(**model, *backend, nullptr, {}, config);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine::Request request;
    request.prompt_token_ids = prompt;
    request.params.temperature = 0;
    request.params.max_tokens = static_cast<int>(greedy.size());
    request.params.ignore_eos = true;
    auto stream = (*engine)->add_request(request);
    ASSERT_TRUE(stream.ok()) << stream.status();
    std::vector<int32_t> generated;
    while ((*engine)->has_work()) (*engine)->step();
    while (auto out = (*stream)->next(std::chrono::milliseconds(0))) {
      generated.insert(generated.end(), out->token_ids.begin(), out->token_ids.end());
    }
    EXPECT_EQ(generated, greedy);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden, ::testing::ValuesIn(fixture_names()),
                         [](const auto& param_info) { return param_info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Golden);

TEST(GoldenFixtures, ArePresent) {
  EXPECT_GE(fixture_names().size(), 8u) << "expected the committed fixtures in " << kGoldenDir;
}

}  // namespace
}  // namespace sieve::models
