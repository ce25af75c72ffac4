#pragma once
// Protection (The Pitfalls of KV Cache Compression, Chen et al. 2025) for every policy at once:
// the slots a decision must keep, and the check that refuses a decision dropping one.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "kvcache/policies/policy.h"
#include "kvcache/policies/spec.h"

namespace sieve::kvcache {

// 1 for each slot a decision must keep: positions below `sink`, the last `window` slots of the
// row, the system prompt's positions [0, system_prompt_tokens) when protected, and `spans`.
// Rows (layer, KV head) of `slot_stride`; `positions` gives each slot's token position.
std::vector<uint8_t> protected_slots(const Protection& protection, int system_prompt_tokens,
                                     std::span<const int32_t> positions,
                                     std::span<const int32_t> valid_lens, int slot_stride);

// Fails loudly (SIEVE_CHECK, naming the policy, row and slot) unless `keep` has one row per
// (layer, KV head), each strictly ascending within the row's valid slots and holding every
// protected slot.
void check_decision(const PolicyInput& input, const KeepSlots& keep, std::string_view policy);

}  // namespace sieve::kvcache
