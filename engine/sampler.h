#pragma once
// Sampling bookkeeping on the host, with vLLM's semantics: logprobs come from the raw
// distribution; repetition penalty (over prompt and output), frequency and presence penalties
// (over the output) and masking of stop tokens before min_tokens run on the backend
// (Backend::apply_penalties), from the per-sample token lists kept here.

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/request.h"
#include "kernels/backend.h"

namespace sieve::engine {

// log-softmax of `logits` at `token`, plus the `top` most likely (token, logprob) pairs.
TokenLogprob compute_logprob(std::span<const float> logits, int32_t token, int top);

// True when `params` asks for a repetition, frequency or presence penalty.
bool has_penalties(const SamplingParams& params);

// One sample's tokens for the penalties: each token of its prompt (only when the repetition
// penalty needs them) and of its output once, in order of first appearance, with its count in
// the output. All are "seen" (kernels::kPenaltySeen).
class PenaltyTokens {
 public:
  PenaltyTokens(const SamplingParams& params, std::span<const int32_t> prompt);

  void add_output(int32_t token);
  std::span<const int32_t> ids() const { return ids_; }
  std::span<const int32_t> output_counts() const { return counts_; }
  // Index of `token` in ids(), or -1.
  int find(int32_t token) const;

 private:
  std::vector<int32_t> ids_;
  std::vector<int32_t> counts_;
  std::unordered_map<int32_t, int32_t> index_;
};

// One step's draws as Backend::sample and Backend::apply_penalties take them: per-draw
// parameters, and CSR token lists for draws with penalties or min_tokens masks. Cleared and
// refilled each step; its vectors keep their capacity, so a warm step allocates nothing.
class SamplingBatch {
 public:
  void clear();
  // Appends a draw of a sample with `params` whose `num_output` tokens so far are counted in
  // `penalty_tokens` (null without penalties). Before min_tokens, the stop tokens and, unless
  // ignore_eos, `eos_token_ids` are masked.
  void add(const SamplingParams& params, uint64_t seed, int num_output,
           const PenaltyTokens* penalty_tokens, std::span<const int32_t> eos_token_ids);

  int64_t num_draws() const { return static_cast<int64_t>(seeds_.size()); }
  // True when some draw in [begin, end) has a token to penalize or mask.
  bool has_penalties(int64_t begin, int64_t end) const {
    return token_indptr_[end] > token_indptr_[begin];
  }
  // The ops' arguments for draws [begin, end) over `logits` (one row each); sampled tokens
  // land in tokens()[begin, end).
  kernels::SampleArgs sample_args(const TensorView& logits, int64_t begin, int64_t end);
  kernels::PenaltyArgs penalty_args(const TensorView& logits, int64_t begin, int64_t end);
  std::span<const int32_t> tokens() const { return tokens_; }

 private:
  std::vector<float> temperature_, top_p_, min_p_;
  std::vector<int32_t> top_k_, tokens_;
  std::vector<int64_t> seeds_, steps_;
  std::vector<int32_t> token_indptr_{0}, token_ids_, output_counts_;
  std::vector<uint8_t> flags_;
  std::vector<float> repetition_penalty_, frequency_penalty_, presence_penalty_;
  std::vector<int32_t> rebased_indptr_;  // penalty_args' indptr for a sub-range of draws
};

}  // namespace sieve::engine
