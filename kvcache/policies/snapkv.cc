// snapkv — SnapKV: LLM Knows What You Are Looking for Before Generation (Li et al., 2024).
// The last w queries (the observation window) foretell what later queries read: for each key,
// s_i = mean over the window's queries of softmax(q·Kᵀ/√d)_i, smoothed along the tokens by a
// pooling of `kernel_size` (so neighbours of a hit stay together), averaged over each KV head's
// query heads; keep the window itself plus the top budget - w. As KVPress computes it: the window
// is left out of the pooling, and pooling is an average with zero padding (kernel 5).

#include <memory>
#include <vector>

#include "kvcache/policies/params.h"
#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {

std::vector<float> SnapKvScoring::scores(const PolicyInput& in) const {
  const int w = in.signals.num_queries;
  const int group = in.num_heads / in.num_kv_heads;
  std::vector<float> per_head(in.signals.window_attention.begin(),
                              in.signals.window_attention.end());
  for (int l = 0; l < in.num_layers; ++l) {
    for (int h = 0; h < in.num_heads; ++h) {
      const int n = in.valid_len(l, h / group) - w;
      std::span<float> row(
          per_head.data() + (static_cast<size_t>(l) * in.num_heads + h) * in.slot_stride,
          in.slot_stride);
      for (int v = 0; v < n; ++v) row[v] /= static_cast<float>(w);
      for (int v = std::max(n, 0); v < in.valid_len(l, h / group); ++v) row[v] = 0;
      if (n <= 0) continue;
      if (max_pooling) {
        max_pool(row, n, kernel_size);
      } else {
        avg_pool(row, n, kernel_size);
      }
    }
  }
  return group_mean(in, per_head);
}

namespace {

struct SnapKvParams final : PolicyParams {
  SnapKvScoring scoring;
};

class SnapKv final : public KvPolicy {
 public:
  std::string_view name() const override { return "snapkv"; }
  StatusOr<std::shared_ptr<const PolicyParams>> parse(ParamReader& reader) const override {
    auto p = std::make_shared<SnapKvParams>();
    RETURN_IF_ERROR(p->scoring.read(reader));
    return std::shared_ptr<const PolicyParams>(p);
  }
  PolicyNeeds needs(const PolicyParams&) const override { return SnapKvScoring::needs(); }

  KeepSlots decide(const PolicyInput& in) const override {
    const auto& p = static_cast<const SnapKvParams&>(*in.params);
    return keep_top(in, p.scoring.scores(in));
  }
};

}  // namespace

Status SnapKvScoring::read(ParamReader& reader) {
  RETURN_IF_ERROR(reader.read_int("kernel_size", 1, 63, &kernel_size));
  if (kernel_size % 2 == 0) {
    return field_error(ParamReader::field("kernel_size"), "must be odd");
  }
  std::string pooling = max_pooling ? "max" : "avg";
  RETURN_IF_ERROR(reader.read_choice("pooling", {"avg", "max"}, &pooling));
  max_pooling = pooling == "max";
  return OkStatus();
}

const KvPolicy* snapkv_policy() {
  static const SnapKv policy;
  return &policy;
}

}  // namespace sieve::kvcache
