// knorm — A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression (Devoto et al.,
// 2024). Keys with a small L2 norm draw the most attention: score_i = -||k_i||, keep the top.
// No attention is computed, so it runs beside any attention kernel.

#include <vector>

#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

class Knorm final : public KvPolicy {
 public:
  std::string_view name() const override { return "knorm"; }
  PolicyNeeds needs(const PolicyParams&) const override {
    PolicyNeeds n;
    n.key_norms = true;
    return n;
  }

  KeepSlots decide(const PolicyInput& in) const override {
    std::vector<float> scores(in.signals.key_norms.begin(), in.signals.key_norms.end());
    for (float& s : scores) s = -s;
    return keep_top(in, scores);
  }
};

}  // namespace

const KvPolicy* knorm_policy() {
  static const Knorm policy;
  return &policy;
}

}  // namespace sieve::kvcache
