#pragma once
// The default model (SmolLM2-135M-Instruct, the GGUF scripts/setup.sh fetches) on the CPU
// backend with its weights dequantized to f32, for tests that compare against an f32 reference
// (transformers, KVPress) or compare a request alone with the same request batched: the CPU's
// quantized-weight GEMMs round activations differently at different batch sizes
// (kernels/README.md).

#include <filesystem>
#include <memory>
#include <string>

#include "core/check.h"
#include "kernels/cpu/cpu_backend.h"
#include "models/model_loader.h"
#include "models/transformer.h"
#include "models/weights.h"

namespace sieve::test_support {

struct DefaultModel {
  std::unique_ptr<kernels::Backend> backend = kernels::cpu::make_cpu_backend();
  std::unique_ptr<models::Transformer> model;
};

// Loads it with `limits`; dies with a message naming scripts/setup.sh when the file is absent.
inline DefaultModel load_default_model(const models::StepLimits& limits) {
  DefaultModel d;
  const std::string path = models::default_model_path();
  SIEVE_CHECK(std::filesystem::exists(path)) << path << " is absent: run scripts/setup.sh";
  auto files = models::load_model_files(path, models::LoadFormat::kAuto);
  SIEVE_CHECK(files.ok()) << files.status();
  auto weights = models::build_weights(files->config, files->tensors, *d.backend, path,
                                       /*dequantize_blocks=*/true);
  SIEVE_CHECK(weights.ok()) << weights.status();
  auto model = models::Transformer::create(files->config, *std::move(weights), *d.backend, limits);
  SIEVE_CHECK(model.ok()) << model.status();
  d.model = *std::move(model);
  return d;
}

}  // namespace sieve::test_support
