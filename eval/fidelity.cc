#include "eval/fidelity.h"

#include <algorithm>
#include <cmath>

namespace sieve::eval {
namespace {

constexpr double kFloor = 1e-10;

double kl_term(double p, double q) {
  if (p <= 0) return 0.0;
  return p * std::log(p / std::max(q, kFloor));
}

}  // namespace

double approx_kl(const engine::TokenLogprob& p, const engine::TokenLogprob& q) {
  double q_top_mass = 0, q_kth = 1;
  for (const auto& [id, lp] : q.top) {
    q_top_mass += std::exp(lp);
    q_kth = std::min(q_kth, std::exp(static_cast<double>(lp)));
  }
  if (q.top.empty()) q_kth = 0;
  int missing = 0;
  // Entries by name, not structured bindings: clang 14 (the fuzz build) cannot capture those.
  for (const auto& entry : p.top) {
    const int32_t id = entry.first;
    const bool in_q =
        std::any_of(q.top.begin(), q.top.end(), [&](const auto& e) { return e.first == id; });
    missing += in_q ? 0 : 1;
  }
  const double q_missing =
      missing ? std::min(q_kth, std::max(0.0, 1.0 - q_top_mass) / missing) : 0.0;
  double kl = 0, p_mass = 0, q_mass = 0;
  for (const auto& entry : p.top) {
    const int32_t id = entry.first;
    const double pi = std::exp(static_cast<double>(entry.second));
    const auto it =
        std::find_if(q.top.begin(), q.top.end(), [&](const auto& e) { return e.first == id; });
    const double qi = it != q.top.end() ? std::exp(static_cast<double>(it->second)) : q_missing;
    kl += kl_term(pi, qi);
    p_mass += pi;
    q_mass += qi;
  }
  kl += kl_term(std::max(0.0, 1.0 - p_mass), std::max(kFloor, 1.0 - q_mass));
  return std::max(0.0, kl);
}

Fidelity compare(const Generation& reference, const Generation& run) {
  Fidelity f;
  const size_t common = std::min(reference.tokens.size(), run.tokens.size());
  const size_t longest = std::max(reference.tokens.size(), run.tokens.size());
  size_t equal = 0;
  for (size_t i = 0; i < common; ++i) {
    if (reference.tokens[i] == run.tokens[i]) {
      ++equal;
    } else if (!f.first_divergence) {
      f.first_divergence = static_cast<int>(i);
    }
  }
  if (!f.first_divergence && common < longest) f.first_divergence = static_cast<int>(common);
  f.greedy_agreement = longest ? static_cast<double>(equal) / longest : 1.0;
  const size_t kl_end =
      std::min({f.first_divergence ? static_cast<size_t>(*f.first_divergence) + 1 : common, common,
                reference.logprobs.size(), run.logprobs.size()});
  double sum = 0;
  for (size_t i = 0; i < kl_end; ++i) sum += approx_kl(reference.logprobs[i], run.logprobs[i]);
  f.kl_positions = static_cast<int>(kl_end);
  f.mean_kl = kl_end ? sum / kl_end : 0.0;
  return f;
}

}  // namespace sieve::eval
