#pragma once
// The model context the server-side fuzzers parse against: the default model's tokenizer and
// chat template when ~/.cache/sieve has it (scripts/setup.sh fetches it, so CI does), else
// token-id prompts only over a 1000-token vocabulary. Built once per process.

#include "google/protobuf/stubs/logging.h"
#include "models/model_loader.h"
#include "server/cli_common.h"
#include "server/model_context.h"

namespace sieve::fuzz {

inline server::ModelContext* make_fuzz_model_context() {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 in proto strings is expected here
  auto* model = new server::ModelContext;
  model->served_model_names = {"fuzz"};
  model->max_model_len = 512;
  auto files = models::load_model_files("default", models::LoadFormat::kAuto);
  if (!files.ok()) {
    model->config.vocab_size = 1000;
    return model;
  }
  auto tokenizer = models::load_model_tokenizer(*files);
  if (tokenizer.ok() && *tokenizer) {
    model->tokenizer = tokenizer->release();
    model->chat_template =
        models::chat_template_for(*model->tokenizer, server::architecture_hint(files->config));
  }
  model->config = files->config;
  return model;
}

}  // namespace sieve::fuzz
