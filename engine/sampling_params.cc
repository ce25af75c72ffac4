#include "engine/sampling_params.h"

#include <cmath>

#include "core/field_error.h"

namespace sieve::engine {

Status validate(const SamplingParams& p) {
  auto bad = [](const std::string& field, const std::string& why) {
    return InvalidFieldError(field, field + " " + why);
  };
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) {
    return bad("temperature", "must be a finite number >= 0, got " + std::to_string(p.temperature));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return bad("top_p", "must be in (0, 1], got " + std::to_string(p.top_p));
  }
  if (p.top_k < -1) return bad("top_k", "must be -1 (off), 0 (off) or positive, got " +
                                           std::to_string(p.top_k));
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {
    return bad("min_p", "must be in [0, 1], got " + std::to_string(p.min_p));
  }
  if (p.max_tokens < 1) {
    return bad("max_tokens", "must be at least 1, got " + std::to_string(p.max_tokens));
  }
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) {
    return bad("min_tokens", "must be in [0, max_tokens], got " + std::to_string(p.min_tokens));
  }
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty)) {
    return bad("repetition_penalty", "must be > 0");
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return bad("presence_penalty", "must be in [-2, 2]");
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return bad("frequency_penalty", "must be in [-2, 2]");
  }
  if (p.n < 1 || p.n > 128) return bad("n", "must be in [1, 128], got " + std::to_string(p.n));
  if (p.logprobs < -1 || p.logprobs > kMaxLogprobs) {
    return bad("logprobs", "must be in [0, " + std::to_string(kMaxLogprobs) + "], got " +
                               std::to_string(p.logprobs));
  }
  if (p.prompt_logprobs < -1 || p.prompt_logprobs > kMaxLogprobs) {
    return bad("prompt_logprobs", "must be in [0, " + std::to_string(kMaxLogprobs) + "], got " +
                                      std::to_string(p.prompt_logprobs));
  }
  for (const std::string& s : p.stop) {
    if (s.empty()) return bad("stop", "strings must not be empty");
  }
  return OkStatus();
}

}  // namespace sieve::engine
