// h2o — H2O: Heavy-Hitter Oracle for Efficient Generative Inference (Zhang et al., 2023).
// score_i = the attention probability token i has received, summed over queries so far and over
// the KV head's query heads; keep the recent window plus the top budget - window per KV head.
// The sum is kept per slot between actions (PolicyInput::state): each action adds the window's
// queries, so with interval <= window (the default: both 64) every decode query is counted. Of
// the prompt's queries, the last `window` are counted (the paper's are all of them).

#include <vector>

#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

class H2o final : public KvPolicy {
 public:
  std::string_view name() const override { return "h2o"; }
  int default_window() const override { return 64; }
  PolicyNeeds needs(const PolicyParams&) const override {
    PolicyNeeds n;
    n.window_attention = true;
    n.slot_state = true;
    return n;
  }

  KeepSlots decide(const PolicyInput& in) const override {
    const int group = in.num_heads / in.num_kv_heads;
    const size_t stride = in.slot_stride;
    for (int l = 0; l < in.num_layers; ++l) {
      for (int kv = 0; kv < in.num_kv_heads; ++kv) {
        float* acc = in.state.data() + in.row(l, kv) * stride;
        const int n = in.valid_len(l, kv);
        for (int g = 0; g < group; ++g) {
          const float* p = in.signals.window_attention.data() +
                           (static_cast<size_t>(l) * in.num_heads + kv * group + g) * stride;
          for (int v = 0; v < n; ++v) acc[v] += p[v];
        }
      }
    }
    return keep_top(in, std::span<const float>(in.state.data(), in.state.size()));
  }
};

}  // namespace

const KvPolicy* h2o_policy() {
  static const H2o policy;
  return &policy;
}

}  // namespace sieve::kvcache
