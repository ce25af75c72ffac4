#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_set>

namespace sieve::engine {

TokenLogprob compute_logprob(std::span<const float> logits, int32_t token, int top) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  const double log_z = max + std::log(sum);
  TokenLogprob out;
  out.token_id = token;
  out.logprob = static_cast<float>(logits[token] - log_z);
  if (top > 0) {
    std::vector<int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    const size_t k = std::min<size_t>(top, ids.size());
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (size_t i = 0; i < k; ++i) {
      out.top.emplace_back(ids[i], static_cast<float>(logits[ids[i]] - log_z));
    }
  }
  return out;
}

void apply_penalties(std::span<float> logits, const SamplingParams& p,
                     std::span<const int32_t> prompt,
                     const std::unordered_map<int32_t, int>& output_counts) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (p.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(prompt.begin(), prompt.end());
    for (const auto& [token, count] : output_counts) seen.insert(token);
    for (int32_t token : seen) {
      if (token < 0 || token >= vocab) continue;
      float& x = logits[token];
      x = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
    }
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    for (const auto& [token, count] : output_counts) {
      if (token < 0 || token >= vocab) continue;
      logits[token] -= p.frequency_penalty * count + p.presence_penalty;
    }
  }
}

void mask_tokens(std::span<float> logits, std::span<const int32_t> token_ids) {
  for (int32_t token : token_ids) {
    if (token >= 0 && token < static_cast<int64_t>(logits.size())) logits[token] = -INFINITY;
  }
}

}  // namespace sieve::engine
