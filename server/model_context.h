#pragma once
// What the API front ends know about the served model: names, tokenizer, chat template, limits.
// Immutable after start-up; shared by the HTTP and gRPC servers and their threads.

#include <algorithm>
#include <string>
#include <vector>

#include "engine/input_processor.h"
#include "models/config.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"
#include "server/compression.h"
#include "server/generation_config.h"

namespace sieve::server {

struct ModelContext {
  std::vector<std::string> served_model_names;   // the first is reported in responses
  const models::Tokenizer* tokenizer = nullptr;  // null: token-id prompts only
  models::ChatTemplate chat_template;
  models::ModelConfig config;
  std::string source;        // the model's path
  std::string backend_name;  // "cpu", "cuda"
  int max_model_len = 0;
  int max_num_seqs = 0;  // the most samples (n) a request may ask for; 0: unchecked
  int kv_pages_total = 0;
  // Requests without a `compression` object get this one (`--kv-compression`).
  CompressionSpec default_compression;
  // Sampling defaults for the fields a request leaves unset (--generation-config).
  GenerationDefaults generation_defaults;

  // What requests are checked against while parsing (the engine checks them again).
  engine::InputLimits input_limits() const {
    return {config.vocab_size, max_model_len, max_num_seqs};
  }
  const std::string& model_name() const { return served_model_names.front(); }
  // True for an empty name (the field left out) or one of the served names.
  bool serves(const std::string& model) const {
    return model.empty() || std::find(served_model_names.begin(), served_model_names.end(),
                                      model) != served_model_names.end();
  }
};

// The server's version string ("0.1.0").
const char* sieve_version();

}  // namespace sieve::server
