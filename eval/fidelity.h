#pragma once
// Fidelity of a run against the full-cache run of the same prompt ("loyalty" in EffiVLM-Bench):
// greedy agreement, first divergence, and the mean KL divergence of next-token distributions.

#include <optional>
#include <vector>

#include "engine/request.h"

namespace sieve::eval {

// One greedy generation with its per-position top-k logprobs (the engine's TokenLogprob).
struct Generation {
  std::vector<int32_t> tokens;
  std::vector<engine::TokenLogprob> logprobs;  // one per token, with `top` filled
};

struct Fidelity {
  // Positions i < max(len) where both generations have the same token, over max(len): 1 when
  // identical; a shorter generation disagrees at every position it lacks.
  double greedy_agreement = 1;
  // The first position where they differ (a length difference counts at the shorter's end);
  // empty when identical.
  std::optional<int> first_divergence;
  // Mean over positions 0 .. first divergence (inclusive: both distributions there follow the
  // same prefix) of approx_kl(reference, run); 0 positions: 0.
  double mean_kl = 0;
  int kl_positions = 0;
};

Fidelity compare(const Generation& reference, const Generation& run);

// KL(P || Q) between two next-token distributions known only by their top-k logprobs. The
// support is P's top k plus one bin for the rest of the vocabulary ("lumped"):
//   KL ~ sum_{i in topk(P)} p_i log(p_i / q_i) + p_rest log(p_rest / q_rest),
// where p_rest = 1 - sum p_i. q_i is Q's logprob when i is in Q's top k; otherwise it is unknown
// but at most Q's k-th probability and at most Q's mass outside its top k, so it is estimated as
// min(q_k, (1 - sum_{topk(Q)} q) / m), m the number of P's top-k tokens missing from Q's top k.
// q_rest = 1 - sum_{i in topk(P)} q_i. Probabilities are floored at 1e-10. Exact when both top
// k's hold all the mass; with k = 20 on a peaked greedy distribution the lumped bin is small.
double approx_kl(const engine::TokenLogprob& p, const engine::TokenLogprob& q);

}  // namespace sieve::eval
