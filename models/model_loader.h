#pragma once
// Finds and loads a model: a Hugging Face directory (config.json, *.safetensors), a GGUF file, or
// "default" (the embedded SmolLM2-135M-Instruct GGUF fetched by scripts/setup.sh). With the dummy
// load format, the path names a config.json (or a directory holding one) and the weights are random.

#include <string>

#include "core/status.h"
#include <memory>
#include <optional>

#include "models/config.h"
#include "models/safetensors.h"
#include "models/tokenizer/tokenizer.h"
#include "models/tokenizer/vocab.h"

namespace sieve::models {

enum class LoadFormat { kAuto, kDummy };

struct ModelFiles {
  std::string source;      // what the user named, resolved to a path
  ModelConfig config;
  TensorMap tensors;       // Hugging Face names; empty for dummy weights
  bool is_gguf = false;
  std::optional<VocabData> gguf_vocab;  // the GGUF file's tokenizer metadata
};

// Where `--model default` points: $SIEVE_MODEL_CACHE, else $XDG_CACHE_HOME/sieve, else
// ~/.cache/sieve, then models/SmolLM2-135M-Instruct.Q4_1.gguf.
std::string default_model_path();

// Loads config and tensors (not yet on a backend). Errors name the file and the problem.
StatusOr<ModelFiles> load_model_files(const std::string& model, LoadFormat format);

// The model's tokenizer: from the GGUF vocabulary, or a Hugging Face directory's tokenizer.json /
// tokenizer.model. Null (not an error) when the model has none (e.g. dummy weights, bare fixtures).
StatusOr<std::unique_ptr<Tokenizer>> load_model_tokenizer(const ModelFiles& files);

// The tokenizer of `model` (a path or "default") without loading its weights.
StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer_for(const std::string& model);

}  // namespace sieve::models
