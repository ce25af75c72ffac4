// gkv — G-KV: decoding-time KV cache eviction with global attention (Liao et al., 2025), the
// training-free policy with the authors' defaults. Every `interval` generated tokens (128):
//   local_i = mean over the last w queries (16) of max over the KV head's query heads of the
//             attention probability on token i, divided by its head's maximum;
//   g_i     = max(alpha·g_i_prev, local_i)       (combine "max"; "mean": alpha·g_prev +
//   (1-alpha)·local) sim_i   = mean cosine similarity of k_i to the head's other keys, over its
//   head's max |sim| final_i = lambda·g_i - (1 - lambda)·sim_i     (alpha 0.8, lambda 0.5)
// keep the recent window plus the top budget - window by final_i; g survives with its slot.
// sim_i comes from k̂_i·ā (ā the mean of k̂): mean_{j≠i} k̂_i·k̂_j = (n k̂_i·ā - 1) / (n - 1).

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "kvcache/policies/params.h"
#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

struct GkvParams final : PolicyParams {
  double alpha = 0.8;
  double lambda = 0.5;
  bool mean_combine = false;
};

class Gkv final : public KvPolicy {
 public:
  std::string_view name() const override { return "gkv"; }
  int default_window() const override { return 16; }
  int default_interval() const override { return 128; }
  StatusOr<std::shared_ptr<const PolicyParams>> parse(ParamReader& reader) const override {
    auto p = std::make_shared<GkvParams>();
    RETURN_IF_ERROR(reader.read_double("alpha", 0.0, 1.0, &p->alpha));
    RETURN_IF_ERROR(reader.read_double("lambda", 0.0, 1.0, &p->lambda));
    std::string combine = "max";
    RETURN_IF_ERROR(reader.read_choice("combine", {"max", "mean"}, &combine));
    p->mean_combine = combine == "mean";
    return std::shared_ptr<const PolicyParams>(p);
  }
  PolicyNeeds needs(const PolicyParams&) const override {
    PolicyNeeds n;
    n.window_attention_group_max = true;
    n.key_anchor_dot = true;
    n.slot_state = true;
    return n;
  }

  KeepSlots decide(const PolicyInput& in) const override {
    const auto& p = static_cast<const GkvParams&>(*in.params);
    const size_t stride = in.slot_stride;
    std::vector<float> final_score(in.state.size(), 0.0f);
    for (int r = 0; r < in.num_layers * in.num_kv_heads; ++r) {
      const int n = in.valid_lens[r];
      if (n == 0) continue;
      const float* local = in.signals.window_attention_group_max.data() + r * stride;
      const float* anchor_dot = in.signals.key_anchor_dot.data() + r * stride;
      float* g = in.state.data() + r * stride;
      float* out = final_score.data() + r * stride;
      const float local_max = std::max(*std::max_element(local, local + n), 1e-30f);
      std::vector<float> sim(n, 0.0f);
      float sim_max = 1e-30f;
      for (int v = 0; v < n; ++v) {
        sim[v] = n > 1 ? (n * anchor_dot[v] - 1.0f) / static_cast<float>(n - 1) : 0.0f;
        sim_max = std::max(sim_max, std::fabs(sim[v]));
      }
      for (int v = 0; v < n; ++v) {
        const float l = local[v] / local_max;
        const float prev = static_cast<float>(p.alpha) * g[v];
        g[v] = p.mean_combine ? prev + static_cast<float>(1 - p.alpha) * l : std::max(prev, l);
        out[v] = static_cast<float>(p.lambda) * g[v] -
                 static_cast<float>(1 - p.lambda) * sim[v] / sim_max;
      }
    }
    return keep_top(in, final_score);
  }
};

}  // namespace

const KvPolicy* gkv_policy() {
  static const Gkv policy;
  return &policy;
}

}  // namespace sieve::kvcache
