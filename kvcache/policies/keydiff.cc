// keydiff — KeyDiff: Key Similarity-Based KV Cache Eviction (Park et al., 2025). Per head, the
// anchor a = mean_i(k_i / ||k_i||); score_i = -cos(k_i, a): the most distinctive keys stay.
// Ranking by -k̂_i·a is the same within a head (||a|| is the head's constant).

#include <vector>

#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

class KeyDiff final : public KvPolicy {
 public:
  std::string_view name() const override { return "keydiff"; }
  PolicyNeeds needs(const PolicyParams&) const override {
    PolicyNeeds n;
    n.key_anchor_dot = true;
    return n;
  }

  KeepSlots decide(const PolicyInput& in) const override {
    std::vector<float> scores(in.signals.key_anchor_dot.begin(), in.signals.key_anchor_dot.end());
    for (float& s : scores) s = -s;
    return keep_top(in, scores);
  }
};

}  // namespace

const KvPolicy* keydiff_policy() {
  static const KeyDiff policy;
  return &policy;
}

}  // namespace sieve::kvcache
