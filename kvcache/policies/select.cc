#include "kvcache/policies/select.h"

#include <algorithm>
#include <numeric>

#include "core/check.h"

namespace sieve::kvcache {

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
    // The set of the `extra` best under a strict order (score, then the earlier slot): linear
    // time, the same set a full sort would give.
    if (extra > 0 && extra < static_cast<int>(order.size())) {
      std::nth_element(order.begin(), order.begin() + extra - 1, order.end(),
                       [&](int32_t a, int32_t b) {
                         return score[a] > score[b] || (score[a] == score[b] && a < b);
                       });
    }
    // Protected or chosen, in slot order: one pass over a mark per slot instead of a sort.
    chosen.assign(protect, protect + n);
    for (int i = 0; i < extra; ++i) chosen[order[i]] = 1;
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
