// expected_attention — Expected Attention: KV cache compression by estimating attention from
// future queries distribution (Devoto et al., 2025), as KVPress 0.5.5's ExpectedAttentionPress
// computes it. Future queries are modelled as a Gaussian fitted to the prompt's queries: the
// mean mu_h and the (biased) covariance Σ_h of the pre-RoPE queries of every query head h at
// positions n_sink and later, both rotated by the RoPE matrix averaged over the
// n_future_positions positions after the sequence (R = mean_p R_p: mu ← R mu, Σ ← R Σ Rᵀ). The
// expected attention logit of key k is then
//   z_h(k) = mu_h·k / √d + kᵀ Σ_h k / (2d),
// softmax over the non-sink keys of each query head, averaged over the KV head's query heads,
// times ||v|| (use_vnorm), plus epsilon; the n_sink first tokens are always kept.
//
// The statistics come from the prompt (prefill) only. Decode-time actions (`interval`) reuse
// them with the averaged RoPE of the positions after the current length: the prompt's queries
// stand for the future ones, and decode steps gather nothing (they keep their graphs).

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "kvcache/policies/params.h"
#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

struct ExpectedAttentionParams final : PolicyParams {
  int n_future_positions = 512;
  int n_sink = 4;
  bool use_covariance = true;
  bool use_vnorm = true;
  double epsilon = 0.0;
};

class ExpectedAttention final : public KvPolicy {
 public:
  std::string_view name() const override { return "expected_attention"; }
  StatusOr<std::shared_ptr<const PolicyParams>> parse(ParamReader& reader) const override {
    auto p = std::make_shared<ExpectedAttentionParams>();
    RETURN_IF_ERROR(reader.read_int("n_future_positions", 1, 1 << 20, &p->n_future_positions));
    RETURN_IF_ERROR(reader.read_int("n_sink", 0, 1 << 20, &p->n_sink));
    RETURN_IF_ERROR(reader.read_bool("use_covariance", &p->use_covariance));
    RETURN_IF_ERROR(reader.read_bool("use_vnorm", &p->use_vnorm));
    RETURN_IF_ERROR(reader.read_double("epsilon", 0.0, 1e6, &p->epsilon));
    return std::shared_ptr<const PolicyParams>(p);
  }
  PolicyNeeds needs(const PolicyParams& params) const override {
    const auto& p = static_cast<const ExpectedAttentionParams&>(params);
    PolicyNeeds n;
    n.expected_logits = true;
    n.query_stats_from = p.n_sink;
    n.future_positions = p.n_future_positions;
    n.query_covariance = p.use_covariance;
    n.value_norms = p.use_vnorm;
    return n;
  }

  KeepSlots decide(const PolicyInput& in) const override {
    const auto& p = static_cast<const ExpectedAttentionParams&>(*in.params);
    const int group = in.num_heads / in.num_kv_heads;
    const size_t stride = in.slot_stride;
    std::vector<float> scores(static_cast<size_t>(in.num_layers) * in.num_kv_heads * stride, 0.0f);
    std::vector<double> mean, probs;
    for (int l = 0; l < in.num_layers; ++l) {
      for (int kv = 0; kv < in.num_kv_heads; ++kv) {
        const int r = in.row(l, kv);
        const int n = in.valid_lens[r];
        const int32_t* position = in.positions.data() + r * stride;
        mean.assign(n, 0.0);
        for (int g = 0; g < group; ++g) {
          const float* z = in.signals.expected_logits.data() +
                           (static_cast<size_t>(l) * in.num_heads + kv * group + g) * stride;
          // Softmax over the non-sink slots.
          double max = -std::numeric_limits<double>::infinity();
          for (int v = 0; v < n; ++v) {
            if (position[v] >= p.n_sink) max = std::max(max, double{z[v]});
          }
          probs.assign(n, 0.0);
          double sum = 0;
          for (int v = 0; v < n; ++v) {
            if (position[v] < p.n_sink) continue;
            probs[v] = std::exp(z[v] - max);
            sum += probs[v];
          }
          for (int v = 0; v < n; ++v) mean[v] += probs[v] / (sum * group);
        }
        float* score = scores.data() + r * stride;
        for (int v = 0; v < n; ++v) {
          if (position[v] < p.n_sink) {
            score[v] = std::numeric_limits<float>::infinity();
            continue;
          }
          double s = mean[v] + p.epsilon;
          if (p.use_vnorm) s *= in.signals.value_norms[r * stride + v];
          score[v] = static_cast<float>(s);
        }
      }
    }
    return keep_top(in, scores);
  }
};

}  // namespace

const KvPolicy* expected_attention_policy() {
  static const ExpectedAttention policy;
  return &policy;
}

}  // namespace sieve::kvcache
