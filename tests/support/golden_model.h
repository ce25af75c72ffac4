#pragma once
// A golden fixture (tests/fixtures/golden/<name>: config, weights, golden.json) loaded onto a
// backend, for the tests that run the engine or the model on those small models.

#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "core/check.h"
#include "kernels/backend.h"
#include "models/model_loader.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"

namespace sieve::test_support {

struct GoldenCase {
  std::vector<int32_t> prompt;
  std::vector<int32_t> greedy;  // transformers' greedy continuation
};

struct GoldenModel {
  std::unique_ptr<models::Transformer> model;
  std::vector<GoldenCase> cases;  // golden.json's, in order
};

// Aborts with the loader's message on a broken fixture: the fixtures are committed files.
inline GoldenModel load_golden_model(const std::filesystem::path& dir, kernels::Backend& backend,
                                     const models::StepLimits& limits) {
  GoldenModel g;
  auto files = models::load_model_files(dir.string(), models::LoadFormat::kAuto);
  SIEVE_CHECK(files.ok()) << files.status();
  auto weights = models::build_weights(files->config, files->tensors, backend, dir.string());
  SIEVE_CHECK(weights.ok()) << weights.status();
  auto model = models::Transformer::create(files->config, *std::move(weights), backend, limits);
  SIEVE_CHECK(model.ok()) << model.status();
  g.model = *std::move(model);
  SIEVE_CHECK(std::filesystem::exists(dir / "golden.json")) << dir;
  std::ifstream in(dir / "golden.json");
  const nlohmann::json golden = nlohmann::json::parse(in);
  for (const auto& c : golden["cases"]) {
    g.cases.push_back(
        {c["prompt_ids"].get<std::vector<int32_t>>(), c["greedy_ids"].get<std::vector<int32_t>>()});
  }
  return g;
}

}  // namespace sieve::test_support
