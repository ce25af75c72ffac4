#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "kernels/cpu/ops.h"

namespace sieve::kernels::cpu {
namespace {

// Samples one row of logits with the given parameters.
int32_t sample_one(std::vector<float> logits, float temperature, int top_k, float top_p,
                   float min_p, int64_t seed, int64_t step) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  int32_t out = -1;
  sample({TensorView(logits.data(), DType::kF32, {1, vocab}),
          TensorView(&temperature, DType::kF32, {1}), TensorView(&top_k, DType::kI32, {1}),
          TensorView(&top_p, DType::kF32, {1}), TensorView(&min_p, DType::kF32, {1}),
          TensorView(&seed, DType::kI64, {1}), TensorView(&step, DType::kI64, {1}),
          TensorView(&out, DType::kI32, {1})});
  return out;
}

std::vector<float> logits_of(std::vector<double> probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

TEST(Sampling, GreedyTakesTheArgmax) {
  std::vector<float> logits = {0.1f, 3.0f, -2.0f, 2.9f};
  EXPECT_EQ(sample_one(logits, 0.0f, -1, 1.0f, 0.0f, 1, 0), 1);
  EXPECT_EQ(sample_one(logits, 5.0f, 1, 1.0f, 0.0f, 1, 0), 1);  // top-k 1 is greedy too
}

TEST(Sampling, FollowsTheSoftmaxDistribution) {
  const std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  std::vector<int> counts(4);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[sample_one(logits_of(probs), 1.0f, -1, 1.0f, 0.0f, 42, i)];
  for (int t = 0; t < 4; ++t) {
    const double sigma = std::sqrt(n * probs[t] * (1 - probs[t]));
    EXPECT_NEAR(counts[t], n * probs[t], 5 * sigma) << "token " << t;
  }
}

TEST(Sampling, TopPTopKAndMinPRestrictTheSupport) {
  const std::vector<double> probs = {0.4, 0.3, 0.2, 0.1};
  std::set<int> top_p_seen, top_k_seen, min_p_seen;
  for (int i = 0; i < 2000; ++i) {
    top_p_seen.insert(sample_one(logits_of(probs), 1.0f, -1, 0.65f, 0.0f, 7, i));
    top_k_seen.insert(sample_one(logits_of(probs), 1.0f, 3, 1.0f, 0.0f, 7, i));
    min_p_seen.insert(sample_one(logits_of(probs), 1.0f, -1, 1.0f, 0.6f, 7, i));
  }
  EXPECT_EQ(top_p_seen, (std::set<int>{0, 1}));  // 0.4 + 0.3 reaches 0.65
  EXPECT_EQ(top_k_seen, (std::set<int>{0, 1, 2}));
  EXPECT_EQ(min_p_seen, (std::set<int>{0, 1}));  // 0.6 * 0.4 = 0.24 drops 0.2 and 0.1
}

TEST(Sampling, SameSeedAndStepGiveTheSameToken) {
  std::mt19937 rng(3);
  std::vector<float> logits(1000);
  for (float& x : logits) x = std::normal_distribution<float>()(rng);
  std::map<int64_t, int32_t> first;
  for (int64_t step = 0; step < 50; ++step) first[step] = sample_one(logits, 0.8f, 50, 0.9f, 0.0f, 1234, step);
  for (int64_t step = 0; step < 50; ++step) {
    EXPECT_EQ(sample_one(logits, 0.8f, 50, 0.9f, 0.0f, 1234, step), first[step]);
  }
  int differences = 0;
  for (int64_t step = 0; step < 50; ++step) {
    differences += sample_one(logits, 0.8f, 50, 0.9f, 0.0f, 999, step) != first[step];
  }
  EXPECT_GT(differences, 10);  // another seed draws other tokens
}

}  // namespace
}  // namespace sieve::kernels::cpu
