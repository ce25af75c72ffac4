// pyramidkv — PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling
// (Cai et al., 2024). SnapKV's scores with layer budgets that shrink linearly with depth: with
// mean budget B and ratio beta (20), layer 0 keeps 2B - B/beta and the last layer B/beta
// (window excluded, then added back), linear between, so the total stays L·B.

#include <cmath>
#include <memory>
#include <vector>

#include "kvcache/policies/params.h"
#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

struct PyramidKvParams final : PolicyParams {
  int kernel_size = 5;
  bool max_pooling = false;
  double beta = 20;
};

class PyramidKv final : public KvPolicy {
 public:
  std::string_view name() const override { return "pyramidkv"; }
  StatusOr<std::shared_ptr<const PolicyParams>> parse(ParamReader& reader) const override {
    auto p = std::make_shared<PyramidKvParams>();
    RETURN_IF_ERROR(read_snapkv_params(reader, &p->kernel_size, &p->max_pooling));
    RETURN_IF_ERROR(reader.read_double("beta", 1.0, 1e6, &p->beta));
    return std::shared_ptr<const PolicyParams>(p);
  }
  PolicyNeeds needs(const PolicyParams&) const override {
    PolicyNeeds n;
    n.window_attention = true;
    return n;
  }

  KeepSlots decide(const PolicyInput& in) const override {
    const auto& p = static_cast<const PyramidKvParams&>(*in.params);
    const double b = std::max(0, in.budget - in.window);
    const double last = b / p.beta, first = 2 * b - last;
    const double step = in.num_layers > 1 ? (first - last) / (in.num_layers - 1) : 0;
    std::vector<int> counts;
    for (int l = 0; l < in.num_layers; ++l) {
      const int layer_budget = static_cast<int>(std::lround(first - l * step)) + in.window;
      counts.insert(counts.end(), in.num_kv_heads, layer_budget);
    }
    return keep_top(in, snapkv_scores(in, p.kernel_size, p.max_pooling), counts);
  }
};

}  // namespace

const KvPolicy* pyramidkv_policy() {
  static const PyramidKv policy;
  return &policy;
}

}  // namespace sieve::kvcache
