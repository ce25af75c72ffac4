// tova — Transformers are Multi-State RNNs (Oren et al., 2024), Token Omission Via Attention.
// The current query decides: score_i = its attention probability on token i averaged over all
// the layer's query heads, one decision per layer shared by its KV heads; the lowest go. The
// query is the newest token's (a window of one, which is always kept).

#include <vector>

#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

class Tova final : public KvPolicy {
 public:
  std::string_view name() const override { return "tova"; }
  int default_sink() const override { return 0; }
  int default_window() const override { return 1; }
  PolicyNeeds needs(const PolicyParams&) const override {
    PolicyNeeds n;
    n.window_attention = true;
    return n;
  }

  KeepSlots decide(const PolicyInput& in) const override {
    const size_t stride = in.slot_stride;
    std::vector<float> scores(static_cast<size_t>(in.num_layers) * in.num_kv_heads * stride, 0);
    for (int l = 0; l < in.num_layers; ++l) {
      // Heads of a layer keep equal counts under tova, so any head's length is the layer's.
      const int n = in.valid_len(l, 0);
      std::vector<float> mean(n, 0.0f);
      for (int h = 0; h < in.num_heads; ++h) {
        const float* row = in.signals.window_attention.data() +
                           (static_cast<size_t>(l) * in.num_heads + h) * stride;
        for (int v = 0; v < n; ++v) mean[v] += row[v];
      }
      for (int kv = 0; kv < in.num_kv_heads; ++kv) {
        float* dst = scores.data() + in.row(l, kv) * stride;
        for (int v = 0; v < n; ++v) dst[v] = mean[v] / static_cast<float>(in.num_heads);
      }
    }
    return keep_top(in, scores);
  }
};

}  // namespace

const KvPolicy* tova_policy() {
  static const Tova policy;
  return &policy;
}

}  // namespace sieve::kvcache
