#pragma once
// Per-request sampling parameters, named as vLLM names them, and their validation: every bad
// value is an InvalidArgument naming the field.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace sieve::engine {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 1.0f;        // (0, 1]
  int top_k = -1;            // -1 or 0 = off
  float min_p = 0.0f;        // [0, 1]
  std::optional<uint64_t> seed;  // unset = a random seed per request
  int max_tokens = 16;
  int min_tokens = 0;
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<std::string> stop;  // stop strings: never cut inside nor leaked partially
  bool include_stop_str_in_output = false;
  int n = 1;                      // parallel samples sharing the prompt's pages
  int logprobs = -1;              // -1 = none; k >= 0: the sampled token's and the top-k
  int prompt_logprobs = -1;       // -1 = none; k >= 0: per prompt token
  bool skip_special_tokens = true;
};

// Most top logprobs a request may ask for (vLLM's default max_logprobs).
inline constexpr int kMaxLogprobs = 20;

// Checks ranges that do not depend on the model; an error names its field (error_field()).
Status validate(const SamplingParams& params);

}  // namespace sieve::engine
