#include "kvcache/policies/protection.h"

#include "core/check.h"

namespace sieve::kvcache {

std::vector<uint8_t> protected_slots(const Protection& protection, int system_prompt_tokens,
                                     std::span<const int32_t> positions,
                                     std::span<const int32_t> valid_lens, int slot_stride) {
  std::vector<uint8_t> mask(valid_lens.size() * slot_stride, 0);
  const int system_end = protection.protect_system_prompt ? system_prompt_tokens : 0;
  for (size_t r = 0; r < valid_lens.size(); ++r) {
    const int n = valid_lens[r];
    const size_t base = r * slot_stride;
    for (int v = 0; v < n; ++v) {
      const int position = positions[base + v];
      bool keep = position < protection.sink || position < system_end || v >= n - protection.window;
      for (const auto& [begin, end] : protection.spans) {
        keep = keep || (position >= begin && position < end);
      }
      mask[base + v] = keep;
    }
  }
  return mask;
}

void check_decision(const PolicyInput& input, const KeepSlots& keep, std::string_view policy) {
  const int rows = input.num_layers * input.num_kv_heads;
  SIEVE_CHECK_EQ(static_cast<int>(keep.indptr.size()), rows + 1)
      << "policy " << policy << " returned rows for another geometry";
  SIEVE_CHECK(keep.indptr[0] == 0 && keep.indptr[rows] == static_cast<int>(keep.slots.size()));
  for (int r = 0; r < rows; ++r) {
    const int n = input.valid_lens[r];
    const uint8_t* protect =
        input.protected_slots.data() + static_cast<size_t>(r) * input.slot_stride;
    int next_protected = 0;
    for (int i = keep.indptr[r]; i < keep.indptr[r + 1]; ++i) {
      const int v = keep.slots[i];
      SIEVE_CHECK(v >= 0 && v < n && (i == keep.indptr[r] || v > keep.slots[i - 1]))
          << "policy " << policy << ": row " << r << " keeps slot " << v << " of " << n
          << " out of order";
      for (; next_protected < v; ++next_protected) {
        SIEVE_CHECK(!protect[next_protected]) << "policy " << policy << " evicts protected slot "
                                              << next_protected << " of row " << r;
      }
      next_protected = v + 1;
    }
    for (; next_protected < n; ++next_protected) {
      SIEVE_CHECK(!protect[next_protected])
          << "policy " << policy << " evicts protected slot " << next_protected << " of row " << r;
    }
  }
}

}  // namespace sieve::kvcache
