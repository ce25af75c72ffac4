#include "kvcache/policies/select.h"

#include <algorithm>
#include <numeric>

#include "core/check.h"

namespace sieve::kvcache {
namespace {

// Moves the `extra` best of `order` to its front under a strict order (score, then the earlier
// slot): linear time, the same set a full sort would give.
void best_first(std::vector<int32_t>& order, int extra, const float* score) {
  if (extra > 0 && extra < static_cast<int>(order.size())) {
    std::nth_element(order.begin(), order.begin() + extra - 1, order.end(),
                     [&](int32_t a, int32_t b) {
                       return score[a] > score[b] || (score[a] == score[b] && a < b);
                     });
  }
}

// Fair eviction of one row: the unprotected slots to keep, `want` slots in all shared among the
// segments (PolicyInput::segment_bounds) by segment_quotas, each segment's best by score.
std::vector<int32_t> fair_pick(const PolicyInput& input, int row, int want, const float* score) {
  const int n = input.valid_lens[row];
  const size_t base = static_cast<size_t>(row) * input.slot_stride;
  const std::span<const int32_t> bounds = input.segment_bounds;
  const int num_segments = static_cast<int>(bounds.size()) + 1;
  std::vector<int> lengths(num_segments, 0), protected_counts(num_segments, 0);
  std::vector<std::vector<int32_t>> candidates(num_segments);
  for (int v = 0; v < n; ++v) {
    const int s = static_cast<int>(
        std::upper_bound(bounds.begin(), bounds.end(), input.positions[base + v]) - bounds.begin());
    ++lengths[s];
    if (input.protected_slots[base + v]) {
      ++protected_counts[s];
    } else {
      candidates[s].push_back(v);
    }
  }
  const std::vector<int> quotas = segment_quotas(lengths, protected_counts, want);
  std::vector<int32_t> picked;
  for (int s = 0; s < num_segments; ++s) {
    const int extra = quotas[s] - protected_counts[s];
    best_first(candidates[s], extra, score);
    picked.insert(picked.end(), candidates[s].begin(), candidates[s].begin() + extra);
  }
  return picked;
}

}  // namespace

std::vector<int> segment_quotas(std::span<const int> lengths, std::span<const int> protected_counts,
                                int want) {
  const int num_segments = static_cast<int>(lengths.size());
  std::vector<int> quotas(num_segments, 0);
  std::vector<bool> fixed(num_segments, false);
  // Segments whose protected slots reach their share keep those alone; the others share the
  // rest of the budget by length, until no share falls below its protected slots.
  int64_t budget = want;
  for (bool changed = true; changed;) {
    changed = false;
    int64_t total = 0;
    for (int s = 0; s < num_segments; ++s) total += fixed[s] ? 0 : lengths[s];
    std::vector<int> newly_fixed;
    for (int s = 0; s < num_segments; ++s) {
      if (fixed[s] || total == 0) continue;
      const double share = static_cast<double>(budget) * lengths[s] / static_cast<double>(total);
      if (protected_counts[s] >= share) newly_fixed.push_back(s);
    }
    for (int s : newly_fixed) {
      fixed[s] = true;
      quotas[s] = protected_counts[s];
      budget -= protected_counts[s];
      changed = true;
    }
  }
  // The others: floor(share), then one more for the largest remainders (ties: the earlier).
  int64_t total = 0;
  for (int s = 0; s < num_segments; ++s) total += fixed[s] ? 0 : lengths[s];
  if (total == 0 || budget <= 0) return quotas;
  std::vector<std::pair<int64_t, int>> remainders;
  int64_t given = 0;
  for (int s = 0; s < num_segments; ++s) {
    if (fixed[s]) continue;
    const int64_t scaled = budget * lengths[s];
    quotas[s] = static_cast<int>(scaled / total);
    given += quotas[s];
    remainders.push_back({scaled % total, s});
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; given < budget && i < remainders.size(); ++i, ++given) {
    ++quotas[remainders[i].second];
  }
  return quotas;
}

KeepSlots keep_top(const PolicyInput& input, std::span<const float> scores,
                   std::span<const int> keep_counts) {
  const int rows = input.num_layers * input.num_kv_heads;
  SIEVE_CHECK_EQ(static_cast<int>(keep_counts.size()), rows);
  KeepSlots keep;
  keep.indptr.reserve(rows + 1);
  keep.indptr.push_back(0);
  std::vector<int32_t> order;
  std::vector<uint8_t> chosen;
  for (int r = 0; r < rows; ++r) {
    const int n = input.valid_lens[r];
    const size_t base = static_cast<size_t>(r) * input.slot_stride;
    const uint8_t* protect = input.protected_slots.data() + base;
    const float* score = scores.data() + base;
    order.clear();
    int num_protected = 0;
    for (int v = 0; v < n; ++v) {
      if (protect[v]) {
        ++num_protected;
      } else {
        order.push_back(v);
      }
    }
    const int want = std::clamp(keep_counts[r], num_protected, n);
    const int extra = want - num_protected;
    if (input.segment_bounds.empty()) {
      best_first(order, extra, score);
      order.resize(extra);
    } else {
      order = fair_pick(input, r, want, score);
    }
    // Protected or chosen, in slot order: one pass over a mark per slot instead of a sort.
    chosen.assign(protect, protect + n);
    for (int32_t v : order) chosen[v] = 1;
    for (int v = 0; v < n; ++v) {
      if (chosen[v]) keep.slots.push_back(v);
    }
    keep.indptr.push_back(static_cast<int32_t>(keep.slots.size()));
  }
  return keep;
}

KeepSlots keep_top(const PolicyInput& input, std::span<const float> scores) {
  const std::vector<int> counts(static_cast<size_t>(input.num_layers) * input.num_kv_heads,
                                input.budget);
  return keep_top(input, scores, counts);
}

void avg_pool(std::span<float> row, int n, int kernel) {
  SIEVE_CHECK(kernel >= 1 && kernel % 2 == 1) << "pooling kernel " << kernel;
  if (kernel == 1 || n == 0) return;
  const int half = kernel / 2;
  std::vector<double> prefix(n + 1, 0.0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + row[i];
  for (int i = 0; i < n; ++i) {
    const int lo = std::max(0, i - half), hi = std::min(n, i + half + 1);
    row[i] = static_cast<float>((prefix[hi] - prefix[lo]) / kernel);
  }
}

void max_pool(std::span<float> row, int n, int kernel) {
  SIEVE_CHECK(kernel >= 1 && kernel % 2 == 1) << "pooling kernel " << kernel;
  if (kernel == 1 || n == 0) return;
  const int half = kernel / 2;
  const std::vector<float> in(row.begin(), row.begin() + n);
  for (int i = 0; i < n; ++i) {
    const int lo = std::max(0, i - half), hi = std::min(n, i + half + 1);
    row[i] = *std::max_element(in.begin() + lo, in.begin() + hi);
  }
}

std::vector<float> group_mean(const PolicyInput& input, std::span<const float> per_query_head) {
  const int group = input.num_heads / input.num_kv_heads;
  const size_t stride = input.slot_stride;
  std::vector<float> out(static_cast<size_t>(input.num_layers) * input.num_kv_heads * stride, 0);
  for (int l = 0; l < input.num_layers; ++l) {
    for (int h = 0; h < input.num_kv_heads; ++h) {
      float* dst = out.data() + input.row(l, h) * stride;
      const int n = input.valid_len(l, h);
      for (int g = 0; g < group; ++g) {
        const float* src = per_query_head.data() +
                           (static_cast<size_t>(l) * input.num_heads + h * group + g) * stride;
        for (int v = 0; v < n; ++v) dst[v] += src[v];
      }
      for (int v = 0; v < n; ++v) dst[v] /= static_cast<float>(group);
    }
  }
  return out;
}

}  // namespace sieve::kvcache
