// surface_logic — after SurfaceLogicKV (2025): a head's behaviour decides its budget. At each
// action the window attention classifies every (layer, KV head), from a = the mean over the
// window's queries and the KV head's query heads of the attention probabilities:
//   mass     = the share of a outside the protected slots (sinks, window, system prompt, spans);
//   entropy  = the entropy of a over those unprotected slots, normalised by log(their count);
//   ignoring = mass < ignore_mass (attention stays on what is kept anyway);
//   surface  = not ignoring and entropy < surface_entropy (sharp onto a few exact positions);
//   logic    = the others (attention spread over relevant spans).
// Budgets: the sequence's L·Hkv·B slots. Every head first gets max(its protected slots,
// floor_ratio·B). Stage 1 shares the rest among the layers in proportion to their non-ignoring
// heads; stage 2 shares a layer's part among its non-ignoring heads by weight (surface_weight,
// logic_weight); both by largest remainders. Without any non-ignoring head every head gets B.
// Within a head, slots rank by SnapKV's scores (snapkv.cc). The thresholds are this
// implementation's reading of the paper's classes, exposed as parameters.

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

#include "kvcache/policies/params.h"
#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

struct SurfaceLogicParams final : PolicyParams {
  SnapKvScoring scoring;
  double ignore_mass = 0.2;
  double surface_entropy = 0.5;
  double floor_ratio = 0.2;
  int surface_weight = 2;
  int logic_weight = 1;
};

// `total` shared in proportion to integer `weights` (largest remainders, ties to the earlier).
std::vector<int64_t> share(int64_t total, const std::vector<int64_t>& weights) {
  const int64_t sum = std::accumulate(weights.begin(), weights.end(), int64_t{0});
  std::vector<int64_t> out(weights.size(), 0);
  if (sum == 0 || total <= 0) return out;
  std::vector<std::pair<int64_t, size_t>> remainders;
  int64_t given = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    out[i] = total * weights[i] / sum;
    given += out[i];
    remainders.push_back({total * weights[i] % sum, i});
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; given < total && i < remainders.size(); ++i, ++given) {
    ++out[remainders[i].second];
  }
  return out;
}

class SurfaceLogic final : public KvPolicy {
 public:
  std::string_view name() const override { return "surface_logic"; }
  StatusOr<std::shared_ptr<const PolicyParams>> parse(ParamReader& reader) const override {
    auto p = std::make_shared<SurfaceLogicParams>();
    RETURN_IF_ERROR(p->scoring.read(reader));
    RETURN_IF_ERROR(reader.read_double("ignore_mass", 0.0, 1.0, &p->ignore_mass));
    RETURN_IF_ERROR(reader.read_double("surface_entropy", 0.0, 1.0, &p->surface_entropy));
    RETURN_IF_ERROR(reader.read_double("floor_ratio", 0.0, 1.0, &p->floor_ratio));
    RETURN_IF_ERROR(reader.read_int("surface_weight", 0, 100, &p->surface_weight));
    RETURN_IF_ERROR(reader.read_int("logic_weight", 0, 100, &p->logic_weight));
    return std::shared_ptr<const PolicyParams>(p);
  }
  PolicyNeeds needs(const PolicyParams&) const override { return SnapKvScoring::needs(); }

  KeepSlots decide(const PolicyInput& in) const override {
    const auto& p = static_cast<const SurfaceLogicParams&>(*in.params);
    const std::vector<HeadClass> classes = classify(in, p);
    return keep_top(in, p.scoring.scores(in), budgets(in, p, classes));
  }

  enum class HeadClass { kIgnoring, kSurface, kLogic };

  static std::vector<HeadClass> classify(const PolicyInput& in, const SurfaceLogicParams& p) {
    const int group = in.num_heads / in.num_kv_heads;
    const size_t stride = in.slot_stride;
    const double scale = 1.0 / (static_cast<double>(std::max(in.signals.num_queries, 1)) * group);
    std::vector<HeadClass> classes;
    std::vector<double> a;
    for (int l = 0; l < in.num_layers; ++l) {
      for (int kv = 0; kv < in.num_kv_heads; ++kv) {
        const int r = in.row(l, kv);
        const int n = in.valid_lens[r];
        a.assign(n, 0.0);
        for (int g = 0; g < group; ++g) {
          const float* w = in.signals.window_attention.data() +
                           (static_cast<size_t>(l) * in.num_heads + kv * group + g) * stride;
          for (int v = 0; v < n; ++v) a[v] += w[v] * scale;
        }
        const uint8_t* protect = in.protected_slots.data() + r * stride;
        double mass = 0;
        int outside = 0;
        for (int v = 0; v < n; ++v) {
          if (protect[v]) continue;
          mass += a[v];
          ++outside;
        }
        double entropy = 0;
        for (int v = 0; v < n && mass > 0; ++v) {
          if (protect[v] || a[v] <= 0) continue;
          const double q = a[v] / mass;
          entropy -= q * std::log(q);
        }
        if (outside > 1) entropy /= std::log(static_cast<double>(outside));
        if (outside == 0 || mass < p.ignore_mass) {
          classes.push_back(HeadClass::kIgnoring);
        } else if (entropy < p.surface_entropy) {
          classes.push_back(HeadClass::kSurface);
        } else {
          classes.push_back(HeadClass::kLogic);
        }
      }
    }
    return classes;
  }

  static std::vector<int> budgets(const PolicyInput& in, const SurfaceLogicParams& p,
                                  const std::vector<HeadClass>& classes) {
    const int rows = in.num_layers * in.num_kv_heads;
    std::vector<int64_t> base(rows);
    const int64_t floor = static_cast<int64_t>(p.floor_ratio * in.budget);
    int64_t rest = int64_t{rows} * in.budget;
    for (int r = 0; r < rows; ++r) {
      int64_t num_protected = 0;
      for (int v = 0; v < in.valid_lens[r]; ++v) {
        num_protected += in.protected_slots[static_cast<size_t>(r) * in.slot_stride + v];
      }
      base[r] = std::max(num_protected, floor);
      rest -= base[r];
    }
    std::vector<int64_t> layer_weights(in.num_layers, 0);
    for (int r = 0; r < rows; ++r) {
      layer_weights[r / in.num_kv_heads] += classes[r] != HeadClass::kIgnoring;
    }
    std::vector<int> counts(rows, in.budget);
    if (std::accumulate(layer_weights.begin(), layer_weights.end(), int64_t{0}) == 0) {
      return counts;
    }
    const std::vector<int64_t> layer_share = share(rest, layer_weights);  // stage 1
    for (int l = 0; l < in.num_layers; ++l) {
      std::vector<int64_t> weights(in.num_kv_heads);
      for (int kv = 0; kv < in.num_kv_heads; ++kv) {
        const HeadClass c = classes[in.row(l, kv)];
        weights[kv] = c == HeadClass::kSurface ? p.surface_weight
                      : c == HeadClass::kLogic ? p.logic_weight
                                               : 0;
      }
      // Stage 2; a layer whose weights are all zero keeps its base only.
      const std::vector<int64_t> head_share = share(layer_share[l], weights);
      for (int kv = 0; kv < in.num_kv_heads; ++kv) {
        const int r = in.row(l, kv);
        counts[r] = static_cast<int>(std::min<int64_t>(base[r] + head_share[kv], in.valid_lens[r]));
      }
    }
    return counts;
  }
};

}  // namespace

const KvPolicy* surface_logic_policy() {
  static const SurfaceLogic policy;
  return &policy;
}

}  // namespace sieve::kvcache
