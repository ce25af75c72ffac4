#pragma once
// The per-request `compression` object of both APIs, parsed and validated once (servers, CLI and
// eval all call parse_compression), so every bad field is INVALID_ARGUMENT naming it:
//
//   {"method": "snapkv", "keep_ratio": 0.25, "params": {"window": 32, "protect_system_prompt":
//   true}}
//   {"method": "gkv", "budget": 512, "kv_format": "bf16"}
//   {"method": "knorm", "budget": 256, "fair_eviction": true, "segments": [[0, 300], [300, 900]]}

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "kvcache/policies/policy.h"
#include "nlohmann/json_fwd.hpp"

namespace sieve::kvcache {

// Slots a decision keeps whatever their scores (The Pitfalls of KV Cache Compression, Chen et
// al. 2025): counted within the budget; where they exceed it, protection wins.
struct Protection {
  int sink = 4;                       // the first tokens of the sequence
  int window = 32;                    // the most recent tokens (also the policy's query window)
  bool protect_system_prompt = true;  // Request::system_prompt_tokens
  std::vector<std::pair<int, int>> spans;  // token positions [begin, end)
  // Fair eviction: every segment of the sequence keeps a share of the budget proportional to its
  // length (PolicyInput::segment_bounds). Segments: the client's `segments`, the gaps between
  // them, the system prompt, and the generated tokens.
  bool fair_eviction = false;
  std::vector<std::pair<int, int>> segments;  // token positions [begin, end), disjoint
};

// The longest query window a policy may read (the engine's query store holds this many a
// sequence).
inline constexpr int kMaxQueryWindow = 64;

struct CompressionSpec {
  std::string method = "none";
  const KvPolicy* policy = nullptr;  // null: "none", the full cache
  std::optional<int> budget;         // KV tokens kept per layer and KV head, on average
  std::optional<double> keep_ratio;  // the same as a fraction of the prompt
  // A name of kKvFormats (kvcache/formats.h); empty: the backend's own (f32 on the CPU, bf16 on
  // CUDA).
  std::string kv_format;
  Protection protection;
  // Decode steps between actions once the cache exceeds budget + interval; 0 = prefill only.
  int interval = 64;
  std::shared_ptr<const PolicyParams> params;

  bool compresses() const { return policy != nullptr; }
  // The budget for a prompt of `prompt_tokens`: `budget`, or keep_ratio of the prompt rounded
  // down as KVPress rounds (int(n * (1 - compression_ratio))), at least 1.
  int budget_for(int prompt_tokens) const;
  // The same before rounding (keep_ratio: prompt_tokens · (1 - (1 - keep_ratio)) in double).
  double exact_budget_for(int prompt_tokens) const;
};

// Parses the JSON object; errors name "compression.<field>" or "compression.params.<name>".
StatusOr<CompressionSpec> parse_compression(const nlohmann::json& json);
// Fair eviction's segment boundaries for a sequence (PolicyInput::segment_bounds): ascending,
// positive token positions where a segment begins — the ends of the client's segments and the
// gaps between them, the system prompt's end, the prompt's end. Empty without fair eviction.
std::vector<int32_t> segment_bounds(const Protection& protection, int system_prompt_tokens,
                                    int prompt_tokens);
// KV formats a request may name: every row of kKvFormats.
const std::vector<std::string>& kv_formats();

}  // namespace sieve::kvcache
