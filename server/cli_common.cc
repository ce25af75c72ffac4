#include "server/cli_common.h"

#include <cstdio>

#include "models/weights.h"
#include "spdlog/spdlog.h"

namespace sieve::server {

void add_model_options(CLI::App& app, ModelOptions& o) {
  app.add_option("--model", o.model,
                 "Model: a Hugging Face directory, a .gguf file, or 'default' (SmolLM2-135M-"
                 "Instruct)")
      ->capture_default_str();
  app.add_option("--device", o.device, "Backend: auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--load-format", o.load_format,
                 "auto, or dummy: random weights at the shapes of the config --model names")
      ->check(CLI::IsMember({"auto", "dummy"}))
      ->capture_default_str();
  app.add_option("--max-num-batched-tokens", o.max_num_batched_tokens,
                 "Most tokens in one step (the prefill chunk size)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
}

StatusOr<LoadedRunner> load_runner(const ModelOptions& o) {
  LoadedRunner r;
  const kernels::DevicePreference preference =
      o.device == "cpu"    ? kernels::DevicePreference::kCpu
      : o.device == "cuda" ? kernels::DevicePreference::kCuda
                           : kernels::DevicePreference::kAuto;
  ASSIGN_OR_RETURN(r.backend, kernels::make_backend(preference));
  const models::LoadFormat format =
      o.load_format == "dummy" ? models::LoadFormat::kDummy : models::LoadFormat::kAuto;
  ASSIGN_OR_RETURN(r.files, models::load_model_files(o.model, format));
  models::ModelWeights weights;
  if (format == models::LoadFormat::kDummy) {
    ASSIGN_OR_RETURN(weights, models::random_weights(r.files.config, *r.backend, o.dummy_seed));
  } else {
    ASSIGN_OR_RETURN(weights, models::build_weights(r.files.config, r.files.tensors, *r.backend,
                                                    r.files.source));
  }
  ASSIGN_OR_RETURN(r.model, models::Transformer::create(r.files.config, std::move(weights),
                                                        *r.backend,
                                                        {o.max_num_batched_tokens, 1, 1 << 16}));
  spdlog::info("loaded {} ({}, {} layers, hidden {}, vocab {}) on {}", r.files.source,
               r.files.config.architecture_name, r.files.config.num_layers,
               r.files.config.hidden_size, r.files.config.vocab_size, r.backend->name());
  return r;
}

int report_error(const Status& status) {
  std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
  return 1;
}

}  // namespace sieve::server
