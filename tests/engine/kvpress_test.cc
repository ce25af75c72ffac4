// Sieve's compression decisions against KVPress's (NVIDIA's reference implementation, PyPI
// kvpress 0.5.5) on the default model and three fixed prompts (tests/fixtures/kvpress, made by
// bench/kvpress/make_fixtures.py): for every press Sieve implements, at keep 50%, 25% and 10%,
// each (layer, KV head) keeps the same token positions. Sieve runs with the press's own defaults
// (no sinks or system-prompt protection where KVPress has none). Allowed differences, counted and
// printed: heads the fixture marks as tied at the cut-off (scores within 1e-5), and decisions
// whose budget is below the forced window, where KVPress keeps an arbitrary part of the window
// and Sieve keeps all of it (protection wins over the budget). KVzip, whose budget is shared by
// every layer and head, may differ only where the fixture records a tie at its one global cut-off;
// its reconstruction pass is built from the tokenizer's chat template, so the test first checks
// that Sieve's repeat tokens are the fixture's.

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"
#include "models/model_loader.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"
#include "tests/support/default_model.h"

namespace sieve::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using test_support::DefaultModel;

// f32 weights: the decisions are compared with transformers' on the dequantized model.
DefaultModel& default_model() {
  static DefaultModel* m = new DefaultModel(test_support::load_default_model({1024, 4, 1 << 14}));
  return *m;
}

const models::Tokenizer& tokenizer() {
  static const models::Tokenizer* t = [] {
    auto loaded = models::load_tokenizer_for("default");
    SIEVE_CHECK(loaded.ok() && *loaded) << "no tokenizer for the default model";
    return loaded->release();
  }();
  return *t;
}

std::unique_ptr<Engine> make_engine() {
  EngineConfig config;
  config.max_num_batched_tokens = 1024;
  config.max_num_seqs = 4;
  config.kv_cache_bytes = 64 << 20;
  config.enable_prefix_caching = false;
  auto engine =
      Engine::create(*default_model().model, *default_model().backend, &tokenizer(), {}, config);
  SIEVE_CHECK(engine.ok()) << engine.status();
  return *std::move(engine);
}

// Sieve's method and parameters for a KVPress press at its defaults.
json sieve_compression(const std::string& press, double keep) {
  json params = {{"sink", 0}, {"protect_system_prompt", false}, {"interval", 0}};
  std::string method = press;
  if (press == "snapkv" || press == "adakv" || press == "pyramidkv") params["window"] = 64;
  if (press == "pyramidkv_w8") method = "pyramidkv", params["window"] = 8;
  if (press == "tova") params["window"] = 1;
  if (press == "knorm" || press == "keydiff" || press == "expected_attention") params["window"] = 0;
  if (press == "streaming_llm") params["sink"] = 4, params["window"] = 0;
  if (press == "kvzip") params["sink"] = 4;  // KVzipPress's n_sink
  return {{"method", method}, {"keep_ratio", keep}, {"params", params}};
}

const std::vector<std::string> kPresses = {"snapkv",       "tova",          "knorm",
                                           "keydiff",      "streaming_llm", "pyramidkv",
                                           "pyramidkv_w8", "adakv",         "expected_attention",
                                           "kvzip"};

class KvPress : public ::testing::TestWithParam<std::string> {};

TEST_P(KvPress, KeptSetsEqualKvPress) {
  std::ifstream in(fs::path(SIEVE_SOURCE_DIR) / "tests/fixtures/kvpress" / (GetParam() + ".json"));
  ASSERT_TRUE(in) << GetParam();
  const json fixture = json::parse(in);
  const std::vector<int32_t> prompt = fixture["prompt"]["token_ids"];
  auto engine = make_engine();
  std::vector<std::vector<int32_t>> kept;
  engine->set_compression_observer(
      [&](kvcache::SeqId, const std::vector<std::vector<int32_t>>& positions) {
        kept = positions;
      });

  // The two models agree first: the same greedy continuation as transformers' on this prompt.
  Request full;
  full.prompt_token_ids = prompt;
  full.params.temperature = 0;
  full.params.ignore_eos = true;
  const std::vector<int32_t> greedy = fixture["reference_logits"]["greedy_24"];
  full.params.max_tokens = static_cast<int>(greedy.size());
  auto stream = *engine->add_request(full);
  while (engine->has_work()) engine->step();
  std::vector<int32_t> tokens;
  while (auto out = stream->next(std::chrono::milliseconds(0))) {
    tokens.insert(tokens.end(), out->token_ids.begin(), out->token_ids.end());
  }
  ASSERT_EQ(tokens, greedy) << "the model differs from transformers' on " << GetParam();

  const int num_kv_heads = fixture["model"]["n_kv_heads"];
  // KVzip's reconstruction input, as Sieve builds it: the repeat tokens of the one chunk.
  const json& kvzip = fixture["presses"]["kvzip"];
  const ReconstructionPrompt rp = make_reconstruction_prompt(tokenizer());
  ASSERT_TRUE(rp.available);
  EXPECT_EQ(rp.prefix_length, kvzip["prefix_length"].get<int>());
  std::vector<int32_t> repeat = rp.first_question;
  repeat.insert(repeat.end(), rp.suffix.begin(), rp.suffix.end());
  repeat.insert(repeat.end(), prompt.begin() + rp.prefix_length, prompt.end());
  EXPECT_EQ(repeat, kvzip["repeat_ids"].get<std::vector<int32_t>>());
  for (const std::string& press : kPresses) {
    for (const auto& [ratio_key, decision] : fixture["presses"][press]["decisions"].items()) {
      const double keep = 1.0 - std::stod(ratio_key);
      const std::string label = press + " keep " + std::to_string(keep).substr(0, 4);
      SCOPED_TRACE(label);
      Request r;
      r.prompt_token_ids = prompt;
      r.params.temperature = 0;
      r.params.max_tokens = 2;  // one token would finish the request before its policy acts
      auto spec =
          kvcache::parse_compression(sieve_compression(press, std::round(keep * 100) / 100));
      ASSERT_TRUE(spec.ok()) << spec.status();
      r.compression = std::make_shared<const kvcache::CompressionSpec>(*spec);
      kept.clear();
      auto s = *engine->add_request(r);
      while (engine->has_work()) engine->step();
      ASSERT_FALSE(kept.empty()) << "no compaction happened";
      std::set<std::pair<int, int>> tied;
      for (const json& t : decision["tied"]) tied.insert({t[0].get<int>(), t[1].get<int>()});
      const json& reference = decision["kept"];
      int equal = 0, ties = 0, window_subsets = 0, wrong = 0;
      for (int l = 0; l < static_cast<int>(reference.size()); ++l) {
        for (int h = 0; h < num_kv_heads; ++h) {
          const std::vector<int32_t> want = reference[l][h];
          const std::vector<int32_t>& got = kept[l * num_kv_heads + h];
          if (got == want) {
            ++equal;
          } else if (tied.contains({l, h}) || tied.contains({l, -1}) || tied.contains({-1, -1})) {
            ++ties;
          } else if (static_cast<int>(want.size()) < spec->protection.window &&
                     std::includes(got.begin(), got.end(), want.begin(), want.end())) {
            ++window_subsets;
          } else {
            ++wrong;
            ADD_FAILURE() << "layer " << l << " head " << h << ": kept " << got.size()
                          << " positions, KVPress " << want.size();
          }
        }
      }
      std::printf(
          "kvpress %s %s: %d heads equal, %d tied at the cut-off, %d budget below the "
          "window, %d different\n",
          GetParam().c_str(), label.c_str(), equal, ties, window_subsets, wrong);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Prompts, KvPress,
                         ::testing::Values("chat_facts", "chat_system", "plain_text"));

}  // namespace
}  // namespace sieve::engine
