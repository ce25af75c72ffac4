#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

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

bool has_penalties(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

PenaltyTokens::PenaltyTokens(const SamplingParams& params, std::span<const int32_t> prompt) {
  if (params.repetition_penalty == 1.0f) return;  // the prompt only matters to it
  for (int32_t token : prompt) {
    if (index_.try_emplace(token, static_cast<int32_t>(ids_.size())).second) {
      ids_.push_back(token);
      counts_.push_back(0);
    }
  }
}

void PenaltyTokens::add_output(int32_t token) {
  const auto [it, inserted] = index_.try_emplace(token, static_cast<int32_t>(ids_.size()));
  if (inserted) {
    ids_.push_back(token);
    counts_.push_back(0);
  }
  ++counts_[it->second];
}

int PenaltyTokens::find(int32_t token) const {
  const auto it = index_.find(token);
  return it == index_.end() ? -1 : it->second;
}

void SamplingBatch::clear() {
  for (auto* v : {&temperature_, &top_p_, &min_p_, &repetition_penalty_, &frequency_penalty_,
                  &presence_penalty_}) {
    v->clear();
  }
  for (auto* v : {&top_k_, &tokens_, &token_ids_, &output_counts_}) v->clear();
  seeds_.clear();
  steps_.clear();
  flags_.clear();
  token_indptr_.assign(1, 0);
}

void SamplingBatch::add(const SamplingParams& p, uint64_t seed, int num_output,
                        const PenaltyTokens* penalty_tokens,
                        std::span<const int32_t> eos_token_ids) {
  temperature_.push_back(p.temperature);
  top_k_.push_back(p.top_k);
  top_p_.push_back(p.top_p);
  min_p_.push_back(p.min_p);
  seeds_.push_back(static_cast<int64_t>(seed));
  steps_.push_back(num_output);
  tokens_.push_back(-1);
  repetition_penalty_.push_back(p.repetition_penalty);
  frequency_penalty_.push_back(p.frequency_penalty);
  presence_penalty_.push_back(p.presence_penalty);
  const size_t begin = token_ids_.size();
  if (penalty_tokens != nullptr) {
    token_ids_.insert(token_ids_.end(), penalty_tokens->ids().begin(), penalty_tokens->ids().end());
    output_counts_.insert(output_counts_.end(), penalty_tokens->output_counts().begin(),
                          penalty_tokens->output_counts().end());
    flags_.insert(flags_.end(), penalty_tokens->ids().size(), kernels::kPenaltySeen);
  }
  if (num_output < p.min_tokens) {
    const size_t num_listed = token_ids_.size();
    auto mask = [&](int32_t token) {
      const int index = penalty_tokens ? penalty_tokens->find(token) : -1;
      if (index >= 0) {
        flags_[begin + index] |= kernels::kPenaltyMask;
        return;
      }
      // Each token once per row: stop_token_ids may repeat an EOS id.
      if (std::find(token_ids_.begin() + num_listed, token_ids_.end(), token) != token_ids_.end()) {
        return;
      }
      token_ids_.push_back(token);
      output_counts_.push_back(0);
      flags_.push_back(kernels::kPenaltyMask);
    };
    for (int32_t token : p.stop_token_ids) mask(token);
    if (!p.ignore_eos) {
      for (int32_t token : eos_token_ids) mask(token);
    }
  }
  token_indptr_.push_back(static_cast<int32_t>(token_ids_.size()));
}

kernels::SampleArgs SamplingBatch::sample_args(const TensorView& logits, int64_t begin,
                                               int64_t end) {
  SIEVE_CHECK_EQ(logits.size(0), end - begin);
  const int64_t n = end - begin;
  return {logits,
          TensorView(temperature_.data() + begin, DType::kF32, {n}),
          TensorView(top_k_.data() + begin, DType::kI32, {n}),
          TensorView(top_p_.data() + begin, DType::kF32, {n}),
          TensorView(min_p_.data() + begin, DType::kF32, {n}),
          TensorView(seeds_.data() + begin, DType::kI64, {n}),
          TensorView(steps_.data() + begin, DType::kI64, {n}),
          TensorView(tokens_.data() + begin, DType::kI32, {n})};
}

kernels::PenaltyArgs SamplingBatch::penalty_args(const TensorView& logits, int64_t begin,
                                                 int64_t end) {
  SIEVE_CHECK_EQ(logits.size(0), end - begin);
  const int64_t n = end - begin;
  const int32_t first = token_indptr_[begin];
  rebased_indptr_.resize(n + 1);
  for (int64_t d = 0; d <= n; ++d) rebased_indptr_[d] = token_indptr_[begin + d] - first;
  const int64_t num_entries = rebased_indptr_[n];
  return {logits,
          TensorView(rebased_indptr_.data(), DType::kI32, {n + 1}),
          TensorView(token_ids_.data() + first, DType::kI32, {num_entries}),
          TensorView(output_counts_.data() + first, DType::kI32, {num_entries}),
          TensorView(flags_.data() + first, DType::kU8, {num_entries}),
          TensorView(repetition_penalty_.data() + begin, DType::kF32, {n}),
          TensorView(frequency_penalty_.data() + begin, DType::kF32, {n}),
          TensorView(presence_penalty_.data() + begin, DType::kF32, {n})};
}

}  // namespace sieve::engine
