#pragma once
// Pieces shared by the `sieve` subcommands: loading a model onto a backend from flags.

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "core/status.h"
#include "kernels/backend.h"
#include "models/model_loader.h"
#include "models/transformer.h"

namespace sieve::server {

// Flags every model-running subcommand takes.
struct ModelOptions {
  std::string model = "default";
  std::string device = "auto";       // auto | cpu | cuda
  std::string load_format = "auto";  // auto | dummy
  int max_num_batched_tokens = 512;  // the largest step, in tokens (prefill chunk size)
  uint64_t dummy_seed = 0;
};

void add_model_options(CLI::App& app, ModelOptions& options);

// A model ready to run: backend, weights on it, runner.
struct LoadedRunner {
  std::unique_ptr<kernels::Backend> backend;
  models::ModelFiles files;
  std::unique_ptr<models::Transformer> model;
};

StatusOr<LoadedRunner> load_runner(const ModelOptions& options);

// Prints `status` as "error: <message>" on stderr and returns the process exit code (1).
int report_error(const Status& status);

}  // namespace sieve::server
