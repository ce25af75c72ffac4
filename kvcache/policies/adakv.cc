// adakv — Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation (Feng et al., 2024).
// Head-adaptive budgets over a scorer (snapkv): a layer's Hkv·B slots go to the top-scoring
// (head, slot) pairs of all its heads taken together, each head first keeping its own top
// max(1, int(alpha·B)) (the safeguard, alpha 0.2); scores are SnapKV's, not normalised (as in
// KVPress). Heads with concentrated attention keep few slots, diffuse heads many; attention reads
// each head's own length.

#include <algorithm>
#include <memory>
#include <vector>

#include "kvcache/policies/params.h"
#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

struct AdaKvParams final : PolicyParams {
  SnapKvScoring scoring;
  double alpha = 0.2;
};

class AdaKv final : public KvPolicy {
 public:
  std::string_view name() const override { return "adakv"; }
  StatusOr<std::shared_ptr<const PolicyParams>> parse(ParamReader& reader) const override {
    auto p = std::make_shared<AdaKvParams>();
    std::string scorer = "snapkv";
    RETURN_IF_ERROR(reader.read_choice("scorer", {"snapkv"}, &scorer));
    RETURN_IF_ERROR(p->scoring.read(reader));
    RETURN_IF_ERROR(reader.read_double("alpha", 0.0, 1.0, &p->alpha));
    return std::shared_ptr<const PolicyParams>(p);
  }
  PolicyNeeds needs(const PolicyParams&) const override { return SnapKvScoring::needs(); }
  // A layer's Hkv·B slots may all go to one head.
  int max_row_slots(const PolicyParams&, int budget, int num_kv_heads) const override {
    return budget * num_kv_heads;
  }

  KeepSlots decide(const PolicyInput& in) const override {
    const auto& p = static_cast<const AdaKvParams&>(*in.params);
    std::vector<float> scores = p.scoring.scores(in);
    const size_t stride = in.slot_stride;
    const int safe = std::max(1, static_cast<int>(in.budget * p.alpha));
    std::vector<int> counts(static_cast<size_t>(in.num_layers) * in.num_kv_heads, 0);
    struct Pair {
      float score;
      int head;
      int slot;
    };
    std::vector<Pair> pairs;
    std::vector<int> order;
    for (int l = 0; l < in.num_layers; ++l) {
      pairs.clear();
      for (int h = 0; h < in.num_kv_heads; ++h) {
        const int r = in.row(l, h);
        float* row = scores.data() + r * stride;
        const uint8_t* protect = in.protected_slots.data() + r * stride;
        const int n = in.valid_lens[r];
        // Protected slots, then each head's safeguard (its top slots, protected ones first, as
        // KVPress ranks its forced window above every score) come first.
        for (int v = 0; v < n; ++v) {
          if (protect[v]) row[v] = INFINITY;
        }
        // The top `safe` under (score, then the earlier slot): the set a stable sort's head
        // would give, in linear time.
        order.resize(n);
        for (int v = 0; v < n; ++v) order[v] = v;
        const int num_safe = std::min(safe, n);
        if (num_safe > 0 && num_safe < n) {
          std::nth_element(
              order.begin(), order.begin() + num_safe - 1, order.end(),
              [&](int a, int b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
        }
        for (int i = 0; i < num_safe; ++i) row[order[i]] = INFINITY;
        for (int v = 0; v < n; ++v) pairs.push_back({row[v], h, v});
      }
      const size_t total = std::min(pairs.size(), static_cast<size_t>(in.budget) * in.num_kv_heads);
      // Only how many of the top `total` each head holds matters: a selection, not a sort.
      if (total > 0 && total < pairs.size()) {
        std::nth_element(pairs.begin(), pairs.begin() + static_cast<std::ptrdiff_t>(total) - 1,
                         pairs.end(), [](const Pair& a, const Pair& b) {
                           return a.score > b.score || (a.score == b.score && a.head < b.head) ||
                                  (a.score == b.score && a.head == b.head && a.slot < b.slot);
                         });
      }
      for (size_t i = 0; i < total; ++i) ++counts[in.row(l, pairs[i].head)];
    }
    return keep_top(in, scores, counts);
  }
};

}  // namespace

const KvPolicy* adakv_policy() {
  static const AdaKv policy;
  return &policy;
}

}  // namespace sieve::kvcache
