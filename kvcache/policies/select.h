#pragma once
// Helpers the policies share: keeping the top-scoring slots of each row around the protected
// ones, pooling scores along the token axis, and reducing query heads to their KV head.

#include <span>
#include <vector>

#include "kvcache/policies/policy.h"

namespace sieve::kvcache {

// Keeps, in each (layer, KV head) row r, its protected slots and then its highest-scoring other
// slots (`scores`, rows of input.slot_stride) until keep_counts[r] slots are kept in all (never
// fewer than the protected ones, never more than the valid ones). Ties keep the earlier slot.
// With fair eviction (input.segment_bounds), each segment of the row keeps its quota
// (segment_quotas) of its own best slots instead of competing with the others.
KeepSlots keep_top(const PolicyInput& input, std::span<const float> scores,
                   std::span<const int> keep_counts);
// Fair eviction's quotas: `want` slots shared among segments in proportion to their lengths,
// each quota at least the segment's protected slots (which then count within it) and at most
// its length; largest-remainder rounding, so the quotas sum to max(want, what protection
// needs). want <= the sum of lengths.
std::vector<int> segment_quotas(std::span<const int> lengths, std::span<const int> protected_counts,
                                int want);
// The same with input.budget slots in every row.
KeepSlots keep_top(const PolicyInput& input, std::span<const float> scores);

// In place over row[0, n): the mean of each window of `kernel` (odd) entries centred on it, the
// entries past either end counting as zeros (PyTorch's avg_pool1d with padding kernel / 2).
void avg_pool(std::span<float> row, int n, int kernel);
// In place over row[0, n): the max of each centred window of `kernel` entries (max_pool1d).
void max_pool(std::span<float> row, int n, int kernel);

// [L, num_heads, S] -> [L, num_kv_heads, S]: the mean over each KV head's query heads.
std::vector<float> group_mean(const PolicyInput& input, std::span<const float> per_query_head);

// Rows of input.slot_stride, one per (layer, KV head).
inline std::span<const float> row_of(const PolicyInput& input, std::span<const float> a, int row) {
  return a.subspan(static_cast<size_t>(row) * input.slot_stride, input.slot_stride);
}

}  // namespace sieve::kvcache
