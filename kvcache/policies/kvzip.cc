// kvzip — KVzip: Query-Agnostic KV Cache Compression with Context Reconstruction (Kim et al.,
// 2025). Once the prompt is in the cache, the engine runs the model over the prompt repeated
// ("\n\nRepeat the previous context exactly." and the chat template's assistant turn, then the
// prompt's tokens after the template's prefix), a teacher-forced pass whose K/V live in
// temporary pages. A slot's score is the most attention any reconstruction query gives it:
//   s(l, h, i) = max over the pass's queries t and the query heads g of KV head h of
//                softmax_j(q_{t,g}·k_j / sqrt(d))[i],
// the softmax over the sinks, the slot's chunk and the repeated tokens up to t (KVPress 0.5.5's
// KVzipPress: chunks of `chunk_size` prompt tokens, each reconstructed by its own pass; slots
// between the sinks and the first chunk score 0). The budget is shared by every layer and head:
// of all L·Hkv·n scores the int(L·Hkv·n·r) lowest go, r = 1 - budget/n (KVPress's
// compression_ratio), so heads and layers keep unequal numbers of slots; `layerwise` shares it
// within each layer instead. The sinks are the protected `sink` slots (KVPress's n_sink), kept
// whatever their score. No query is needed: the compressed cache serves any later question, at
// the cost of one more prefill-sized pass.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "kvcache/policies/params.h"
#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

struct KvzipParams final : PolicyParams {
  int chunk_size = 2048;
  bool layerwise = false;
};

// How many of each row's slots are among the `keep` best of rows [first, last) taken together
// (score, then the earlier row, then the earlier slot), added to counts.
void count_top(const PolicyInput& in, const std::vector<float>& scores, int first, int last,
               int64_t keep, std::vector<int>& counts) {
  struct Pair {
    float score;
    int row;
    int slot;
  };
  std::vector<Pair> pairs;
  for (int r = first; r < last; ++r) {
    const float* row = scores.data() + static_cast<size_t>(r) * in.slot_stride;
    for (int v = 0; v < in.valid_lens[r]; ++v) pairs.push_back({row[v], r, v});
  }
  keep = std::clamp<int64_t>(keep, 0, static_cast<int64_t>(pairs.size()));
  if (keep > 0 && keep < static_cast<int64_t>(pairs.size())) {
    std::nth_element(pairs.begin(), pairs.begin() + (keep - 1), pairs.end(),
                     [](const Pair& a, const Pair& b) {
                       if (a.score != b.score) return a.score > b.score;
                       return a.row != b.row ? a.row < b.row : a.slot < b.slot;
                     });
  }
  for (int64_t i = 0; i < keep; ++i) ++counts[pairs[i].row];
}

class Kvzip final : public KvPolicy {
 public:
  std::string_view name() const override { return "kvzip"; }
  StatusOr<std::shared_ptr<const PolicyParams>> parse(ParamReader& reader) const override {
    auto p = std::make_shared<KvzipParams>();
    RETURN_IF_ERROR(reader.read_int("chunk_size", 1, 1 << 20, &p->chunk_size));
    RETURN_IF_ERROR(reader.read_bool("layerwise", &p->layerwise));
    return std::shared_ptr<const PolicyParams>(p);
  }
  // KVPress keeps no recent window: every slot competes on its reconstruction score.
  int default_window() const override { return 0; }
  int default_interval() const override { return 0; }
  bool prefill_only() const override { return true; }
  PolicyNeeds needs(const PolicyParams& params) const override {
    PolicyNeeds n;
    n.reconstruction_chunk = static_cast<const KvzipParams&>(params).chunk_size;
    return n;
  }
  // The budget is shared by every row: one may keep all its slots. (Only decode-time actions
  // reserve pages from this, and kvzip has none.)
  int max_row_slots(const PolicyParams&, int, int) const override {
    return std::numeric_limits<int>::max() / 2;
  }

  KeepSlots decide(const PolicyInput& in) const override {
    const auto& p = static_cast<const KvzipParams&>(*in.params);
    const int rows = in.num_layers * in.num_kv_heads;
    const size_t stride = in.slot_stride;
    std::vector<float> scores(in.signals.reconstruction_max.begin(),
                              in.signals.reconstruction_max.end());
    scores.resize(static_cast<size_t>(rows) * stride, 0.0f);
    int64_t total = 0;
    for (int r = 0; r < rows; ++r) {
      // Protected slots (the sinks) rank above every score, as KVPress gives its sinks max + 1.
      for (int v = 0; v < in.valid_lens[r]; ++v) {
        if (in.protected_slots[r * stride + v]) scores[r * stride + v] = INFINITY;
      }
      total += in.valid_lens[r];
    }
    // KVPress's compression_ratio from the budget of an n-slot row: keep_ratio's budget_exact is
    // n·(1 - r) in double, so r comes back as KVPress's own value.
    const double n = rows > 0 ? static_cast<double>(total) / rows : 0.0;
    const double budget = in.budget_exact > 0 ? in.budget_exact : in.budget;
    const double ratio = n > 0 ? std::clamp(1.0 - budget / n, 0.0, 1.0) : 0.0;
    std::vector<int> counts(rows, 0);
    auto pruned = [&](int64_t slots) { return static_cast<int64_t>(slots * ratio); };
    if (p.layerwise) {
      for (int l = 0; l < in.num_layers; ++l) {
        const int first = in.row(l, 0), last = first + in.num_kv_heads;
        int64_t slots = 0;
        for (int r = first; r < last; ++r) slots += in.valid_lens[r];
        count_top(in, scores, first, last, slots - pruned(slots), counts);
      }
    } else {
      count_top(in, scores, 0, rows, total - pruned(total), counts);
    }
    return keep_top(in, scores, counts);
  }
};

}  // namespace

const KvPolicy* kvzip_policy() {
  static const Kvzip policy;
  return &policy;
}

}  // namespace sieve::kvcache
