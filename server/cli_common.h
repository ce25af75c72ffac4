#pragma once
// Pieces shared by the `sieve` subcommands: loading a model onto a backend from flags.

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "core/status.h"
#include "kernels/backend.h"
#include "engine/engine.h"
#include "models/model_loader.h"
#include "models/transformer.h"

namespace sieve::server {

// Flags every model-running subcommand takes.
struct ModelOptions {
  std::string model = "default";
  std::string device = "auto";       // auto | cpu | cuda
  std::string load_format = "auto";  // auto | dummy
  int max_num_batched_tokens = 512;  // the largest step, in tokens (prefill chunk size)
  int max_num_seqs = 256;
  double kv_cache_gib = 0;  // 0 = the GPU split, or as much as the workload needs, or 1 GiB
  double gpu_memory_utilization = 0.9;
  bool enforce_eager = false;  // no decode graphs
  bool enable_prefix_caching = true;
  int long_prefill_token_threshold = 0;  // 0 = max_num_batched_tokens / 2
  int max_num_partial_prefills = 4;
  int max_long_partial_prefills = 1;
  uint64_t dummy_seed = 0;
  int max_compressing_seqs = 32;  // sequences gathering queries for their policy at once
};

void add_model_options(CLI::App& app, ModelOptions& options);

// A model ready to run: backend, weights on it, runner.
struct LoadedRunner {
  std::unique_ptr<kernels::Backend> backend;
  models::ModelFiles files;
  std::unique_ptr<models::Transformer> model;
};

StatusOr<LoadedRunner> load_runner(const ModelOptions& options);

// An engine over the runner. `max_tokens_needed` > 0 sizes the KV cache for that many tokens
// (one-shot commands); otherwise --kv-cache-gib decides.
StatusOr<std::unique_ptr<engine::Engine>> make_engine(const LoadedRunner& runner,
                                                      const models::Tokenizer* tokenizer,
                                                      const ModelOptions& options,
                                                      int64_t max_tokens_needed = 0);

// The chat template's architecture hint ("llama", "mistral", "qwen2", "qwen3").
std::string architecture_hint(const models::ModelConfig& config);

// Prints `status` as "error: <message>" on stderr and returns the process exit code (1).
int report_error(const Status& status);

}  // namespace sieve::server
