// Sampling on the CPU: greedy, temperature, top-k, top-p, min-p, with a per-sequence counter-based
// random draw so a sequence's tokens never depend on the batch around it.
//
// Order (as vLLM applies them): temperature, then top-k, then top-p over the top-k survivors,
// then min-p relative to the most likely token; the draw inverts the CDF of the survivors sorted by
// probability (ties by token id).

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/hash.h"
#include "kernels/cpu/ops.h"

namespace sieve::kernels::cpu {
namespace {

int32_t argmax(const float* logits, int64_t vocab) {
  return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
}

int32_t sample_row(const float* logits, int64_t vocab, float temperature, int top_k, float top_p,
                   float min_p, uint64_t seed, uint64_t step) {
  if (temperature <= 0.0f) return argmax(logits, vocab);
  // Candidates sorted by logit, descending (ties by id): top-k keeps a prefix of this order.
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = (top_k > 0 && top_k < vocab) ? top_k : vocab;
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (k < vocab) {
    std::partial_sort(order.begin(), order.begin() + k, order.end(), by_logit);
  } else {
    std::sort(order.begin(), order.end(), by_logit);
  }
  order.resize(k);
  std::vector<double> probs(k);
  const double max = logits[order[0]] / temperature;
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    probs[i] = std::exp(logits[order[i]] / temperature - max);
    sum += probs[i];
  }
  for (double& p : probs) p /= sum;
  // top-p: the smallest prefix whose mass reaches top_p (always at least one token).
  int64_t keep = k;
  if (top_p < 1.0f) {
    double cumulative = 0;
    for (int64_t i = 0; i < k; ++i) {
      cumulative += probs[i];
      if (cumulative >= top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  // min-p: drop tokens less likely than min_p times the most likely one.
  if (min_p > 0.0f) {
    const double threshold = min_p * probs[0];
    while (keep > 1 && probs[keep - 1] < threshold) --keep;
  }
  const double mass = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
  const double u = sample_uniform(seed, step) * mass;
  double cumulative = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cumulative += probs[i];
    if (u < cumulative) return order[i];
  }
  return order[keep - 1];
}

}  // namespace

double sample_uniform(uint64_t seed, uint64_t step) {
  const uint64_t bits = splitmix64(splitmix64(seed) ^ step);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

void fill_random(const TensorView& out, uint64_t seed, float mean, float std) {
  SIEVE_CHECK(out.is_contiguous() && out.dtype() == DType::kF32);
  const float half_width = std * 1.7320508f;
  float* data = out.data<float>();
  const uint64_t key = splitmix64(seed);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < out.numel(); ++i) {
    const double u = static_cast<double>(splitmix64(key ^ static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53;
    data[i] = mean + half_width * static_cast<float>(2 * u - 1);
  }
}

void sample(const SampleArgs& a) {
  SIEVE_CHECK_EQ(a.logits.ndim(), 2);
  SIEVE_CHECK_EQ(a.logits.stride(1), 1);
  const int64_t num_seqs = a.logits.size(0);
  const int64_t vocab = a.logits.size(1);
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < num_seqs; ++s) {
    a.out_tokens.data<int32_t>()[s] = sample_row(
        a.logits.data<float>() + s * a.logits.stride(0), vocab, a.temperature.data<float>()[s],
        a.top_k.data<int32_t>()[s], a.top_p.data<float>()[s], a.min_p.data<float>()[s],
        static_cast<uint64_t>(a.seeds.data<int64_t>()[s]),
        static_cast<uint64_t>(a.steps.data<int64_t>()[s]));
  }
}

}  // namespace sieve::kernels::cpu
