#pragma once
// The independent reference the engine's penalty tests (CPU and GPU) compare against: the model
// run one sequence at a time (PagedSequence), vLLM's penalties and the min_tokens mask applied to
// a dense row on the host, and the backend's own sample op with the engine's per-sample seed.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "core/hash.h"
#include "core/tensor.h"
#include "engine/request.h"
#include "engine/sampling_params.h"
#include "kernels/backend.h"
#include "models/transformer.h"
#include "tests/support/paged_sequence.h"

namespace sieve::test_support {

// vLLM's penalties on a dense row, then the min_tokens mask.
inline void penalize(std::vector<float>& row, const engine::SamplingParams& p,
                     const std::vector<int32_t>& prompt, const std::vector<int32_t>& output,
                     const std::vector<int32_t>& eos) {
  const int64_t vocab = static_cast<int64_t>(row.size());
  std::vector<int> counts(vocab, 0);
  std::vector<bool> seen(vocab, false);
  for (int32_t t : prompt) seen[t] = true;
  for (int32_t t : output) {
    ++counts[t];
    seen[t] = true;
  }
  for (int64_t t = 0; t < vocab; ++t) {
    float& x = row[t];
    if (seen[t]) x = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
    if (counts[t] > 0)
      x -= p.frequency_penalty * static_cast<float>(counts[t]) + p.presence_penalty;
  }
  if (static_cast<int>(output.size()) < p.min_tokens) {
    for (int32_t t : p.stop_token_ids) row[t] = -INFINITY;
    if (!p.ignore_eos) {
      for (int32_t t : eos) row[t] = -INFINITY;
    }
  }
}

struct Generated {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // of each token under the raw distribution
};

// Sample `index` of a request with `seed`, one sequence at a time on `backend` (host logits rows
// go to its sample op as they are; a device backend stages them).
inline Generated reference(models::Transformer& model, kernels::Backend& backend,
                           const std::vector<int32_t>& prompt, const engine::SamplingParams& p,
                           uint64_t seed, int index, const std::vector<int32_t>& eos) {
  const int64_t vocab = model.config().vocab_size;
  PagedSequence seq(model, backend, static_cast<int>(prompt.size()) + p.max_tokens + 1);
  const float* logits = seq.step(prompt);
  Generated g;
  for (int t = 0; t < p.max_tokens; ++t) {
    std::vector<float> row(logits, logits + vocab);
    double max = row[0], sum = 0;
    for (float x : row) max = std::max(max, double(x));
    for (float x : row) sum += std::exp(x - max);
    penalize(row, p, prompt, g.tokens, eos);
    float temperature = p.temperature, top_p = p.top_p, min_p = p.min_p;
    int32_t top_k = p.top_k, token = -1;
    int64_t seed_i = static_cast<int64_t>(splitmix64(seed + static_cast<uint64_t>(index))),
            step = t;
    backend.sample({TensorView(row.data(), DType::kF32, {1, vocab}),
                    TensorView(&temperature, DType::kF32, {1}),
                    TensorView(&top_k, DType::kI32, {1}), TensorView(&top_p, DType::kF32, {1}),
                    TensorView(&min_p, DType::kF32, {1}), TensorView(&seed_i, DType::kI64, {1}),
                    TensorView(&step, DType::kI64, {1}), TensorView(&token, DType::kI32, {1})});
    g.tokens.push_back(token);
    g.logprobs.push_back(static_cast<float>(logits[token] - max - std::log(sum)));
    const bool stop = std::count(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) > 0 ||
                      (!p.ignore_eos && std::count(eos.begin(), eos.end(), token) > 0);
    if (stop) break;
    logits = seq.step({token});
  }
  return g;
}

// Three seeded samples of `prompt` with every penalty and logprobs on: two of them are forks, which
// draw from copies of their parent's logits row and keep penalties of their own.
inline engine::Request parallel_penalized_request(std::vector<int32_t> prompt) {
  engine::Request r;
  r.prompt_token_ids = std::move(prompt);
  r.params.temperature = 0.9f;
  r.params.top_k = 50;
  r.params.seed = 1234;
  r.params.n = 3;
  r.params.max_tokens = 10;
  r.params.ignore_eos = true;
  r.params.repetition_penalty = 1.4f;
  r.params.frequency_penalty = 0.3f;
  r.params.presence_penalty = 0.2f;
  r.params.logprobs = 0;
  return r;
}

// Each of the engine's samples of `r` (no EOS ids) equals the reference's sample of the same
// index: its tokens, and its logprobs of the raw distribution (before the penalties); and the
// samples differ from one another.
inline void expect_samples_match_reference(models::Transformer& model, kernels::Backend& backend,
                                           const engine::Request& r,
                                           const std::vector<Generated>& got) {
  ASSERT_EQ(got.size(), static_cast<size_t>(r.params.n));
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < r.params.n; ++i) {
    SCOPED_TRACE(i);
    const Generated want =
        reference(model, backend, r.prompt_token_ids, r.params, *r.params.seed, i, {});
    EXPECT_EQ(got[i].tokens, want.tokens);
    ASSERT_EQ(got[i].logprobs.size(), want.logprobs.size());
    for (size_t t = 0; t < want.logprobs.size(); ++t) {
      EXPECT_NEAR(got[i].logprobs[t], want.logprobs[t], 1e-4) << t;
    }
    distinct.insert(got[i].tokens);
  }
  EXPECT_EQ(distinct.size(), static_cast<size_t>(r.params.n));
}

}  // namespace sieve::test_support
