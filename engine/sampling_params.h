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
};

// Checks ranges that do not depend on the model.
Status validate(const SamplingParams& params);

}  // namespace sieve::engine
