// pyramidkv — PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling
// (Cai et al., 2024). SnapKV's scores with layer budgets that shrink linearly with depth. The
// budgets are KVCache-Factory's, as KVPress computes them, with B the mean budget before
// rounding, w the window, n the cached tokens and beta 20:
//   min = B / beta,  max = 2B - min;  if max >= n - w: max = n - w, min = 2B - max
//   layer l keeps round(max - l·(max - min)/(L - 1))  (the window included)
// and every layer keeps round(B) unless n >= max >= min >= w (round: half to even).

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "kvcache/policies/params.h"
#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

struct PyramidKvParams final : PolicyParams {
  SnapKvScoring scoring;
  double beta = 20;
};

class PyramidKv final : public KvPolicy {
 public:
  std::string_view name() const override { return "pyramidkv"; }
  StatusOr<std::shared_ptr<const PolicyParams>> parse(ParamReader& reader) const override {
    auto p = std::make_shared<PyramidKvParams>();
    RETURN_IF_ERROR(p->scoring.read(reader));
    RETURN_IF_ERROR(reader.read_double("beta", 1.0, 1e6, &p->beta));
    return std::shared_ptr<const PolicyParams>(p);
  }
  PolicyNeeds needs(const PolicyParams&) const override { return SnapKvScoring::needs(); }

  KeepSlots decide(const PolicyInput& in) const override {
    const auto& p = static_cast<const PyramidKvParams&>(*in.params);
    const std::vector<int> budgets = layer_budgets(in, p.beta);
    std::vector<int> counts;
    for (int l = 0; l < in.num_layers; ++l)
      counts.insert(counts.end(), in.num_kv_heads, budgets[l]);
    return keep_top(in, p.scoring.scores(in), counts);
  }
  // The first layer's budget, max_num below, is at most twice the mean (round may add one).
  int max_row_slots(const PolicyParams&, int budget, int) const override { return 2 * budget + 1; }

 private:
  static std::vector<int> layer_budgets(const PolicyInput& in, double beta) {
    int n = 0;
    for (int32_t len : in.valid_lens) n = std::max(n, len);
    const double b = in.budget_exact, w = in.window;
    double min_num = b / beta, max_num = 2 * b - min_num;
    if (max_num >= n - w) {
      max_num = n - w;
      min_num = 2 * b - max_num;
    }
    if (!(n >= max_num && max_num >= min_num && min_num >= w) || in.num_layers < 2) {
      return std::vector<int>(in.num_layers, std::max(1, static_cast<int>(std::nearbyint(b))));
    }
    const double steps = (max_num - min_num) / (in.num_layers - 1);
    std::vector<int> budgets;
    // std::nearbyint rounds half to even in the default rounding mode, as Python's round().
    for (int l = 0; l < in.num_layers; ++l) {
      budgets.push_back(static_cast<int>(std::nearbyint(max_num - l * steps)));
    }
    return budgets;
  }
};

}  // namespace

const KvPolicy* pyramidkv_policy() {
  static const PyramidKv policy;
  return &policy;
}

}  // namespace sieve::kvcache
