#pragma once
// Default sampling parameters of a served model, as vLLM has them: from the model's
// generation_config.json (`--generation-config auto`, or a directory), overridden by
// `--override-generation-config`, and applied only to the fields a request leaves unset.

#include <optional>
#include <string>

#include "core/status.h"
#include "engine/sampling_params.h"

namespace sieve::server {

// The fields vLLM takes from a generation config (max_new_tokens becomes max_tokens).
struct GenerationDefaults {
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<int> top_k;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::optional<int> max_tokens;
  std::string source;  // where they came from, for the log

  bool empty() const;
  // "temperature=0, max_tokens=5" for the start-up log.
  std::string describe() const;
};

// `mode` is "auto" (generation_config.json in the model's directory, when it is one: a GGUF file
// has none), "vllm" (no defaults) or a directory holding generation_config.json;
// `override_json` ("" for none) is an object of the same keys, applied on top. Values are
// checked as a request's are; errors name the flag or the file and the key.
StatusOr<GenerationDefaults> load_generation_defaults(const std::string& mode,
                                                      const std::string& model_path,
                                                      const std::string& override_json);

// Sets every field `defaults` has in `params`: called before a request's own fields are read,
// so what the request gives wins.
void apply_generation_defaults(const GenerationDefaults& defaults, engine::SamplingParams* params);

}  // namespace sieve::server
