#pragma once
// Host-side logits processing before the backend's sampling op, with vLLM's semantics:
// logprobs come from the raw distribution; then repetition penalty (over prompt and output),
// frequency and presence penalties (over the output), and masking of stop tokens before
// min_tokens.

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/request.h"

namespace sieve::engine {

// log-softmax of `logits` at `token`, plus the `top` most likely (token, logprob) pairs.
TokenLogprob compute_logprob(std::span<const float> logits, int32_t token, int top);

// Applies the penalties of `params` in place. `output_counts` counts each generated token.
void apply_penalties(std::span<float> logits, const SamplingParams& params,
                     std::span<const int32_t> prompt,
                     const std::unordered_map<int32_t, int>& output_counts);

// Sets the logits of `token_ids` to -inf (stop tokens before min_tokens is reached).
void mask_tokens(std::span<float> logits, std::span<const int32_t> token_ids);

}  // namespace sieve::engine
