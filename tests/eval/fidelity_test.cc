// Fidelity against hand-computed values: agreement and divergence by position, and the lumped
// top-k KL against the exact KL where the top k holds all the mass.

#include "eval/fidelity.h"

#include <gtest/gtest.h>

#include <cmath>

namespace sieve::eval {
namespace {

engine::TokenLogprob dist(std::vector<std::pair<int32_t, double>> probs) {
  engine::TokenLogprob t;
  t.token_id = probs.front().first;
  t.logprob = static_cast<float>(std::log(probs.front().second));
  for (const auto& [id, p] : probs) t.top.emplace_back(id, static_cast<float>(std::log(p)));
  return t;
}

Generation gen(std::vector<int32_t> tokens) {
  Generation g;
  for (int32_t t : tokens) g.logprobs.push_back(dist({{t, 0.9}, {t + 1000, 0.1}}));
  g.tokens = std::move(tokens);
  return g;
}

TEST(Fidelity, IdenticalRunsAgreeFully) {
  const Fidelity f = compare(gen({1, 2, 3}), gen({1, 2, 3}));
  EXPECT_EQ(f.greedy_agreement, 1.0);
  EXPECT_FALSE(f.first_divergence.has_value());
  EXPECT_NEAR(f.mean_kl, 0.0, 1e-6);
  EXPECT_EQ(f.kl_positions, 3);
}

TEST(Fidelity, AgreementCountsPositionsOverTheLongerRun) {
  const Fidelity f = compare(gen({1, 2, 3, 4}), gen({1, 9, 3}));
  EXPECT_DOUBLE_EQ(f.greedy_agreement, 2.0 / 4.0);
  EXPECT_EQ(f.first_divergence, 1);
  EXPECT_EQ(f.kl_positions, 2);  // positions 0 and 1 (the divergence itself)
  const Fidelity shorter = compare(gen({1, 2, 3}), gen({1, 2}));
  EXPECT_EQ(shorter.first_divergence, 2);
  EXPECT_DOUBLE_EQ(shorter.greedy_agreement, 2.0 / 3.0);
}

TEST(Fidelity, KlIsExactWhenTheTopKHoldsAllTheMass) {
  const auto p = dist({{5, 0.7}, {6, 0.2}, {7, 0.1}});
  const auto q = dist({{6, 0.5}, {5, 0.4}, {7, 0.1}});
  const double exact = 0.7 * std::log(0.7 / 0.4) + 0.2 * std::log(0.2 / 0.5);
  EXPECT_NEAR(approx_kl(p, q), exact, 1e-5);
  EXPECT_NEAR(approx_kl(p, p), 0.0, 1e-6);
}

TEST(Fidelity, KlLumpsTheRestAndBoundsMissingTokens) {
  // P's second token is outside Q's top 2: its probability is taken as min(q_k, rest / 1) = 0.1.
  const auto p = dist({{1, 0.6}, {2, 0.3}});
  const auto q = dist({{1, 0.6}, {3, 0.3}});
  const double q2 = 0.1;  // min(0.3, 1 - 0.9)
  const double expected = 0.3 * std::log(0.3 / q2) + 0.1 * std::log(0.1 / (1 - 0.6 - q2));
  EXPECT_NEAR(approx_kl(p, q), expected, 1e-5);
  EXPECT_GT(approx_kl(p, q), 0.0);
}

}  // namespace
}  // namespace sieve::eval
