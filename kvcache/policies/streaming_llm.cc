// streaming_llm — Efficient Streaming Language Models with Attention Sinks (Xiao et al., 2023).
// Keeps the first `sink` tokens (the attention sinks) and the most recent budget - sink; evicts
// the middle. The same slots in every layer and head, chosen by position alone.

#include <vector>

#include "kvcache/policies/policies.h"
#include "kvcache/policies/select.h"

namespace sieve::kvcache {
namespace {

class StreamingLlm final : public KvPolicy {
 public:
  std::string_view name() const override { return "streaming_llm"; }
  // The recent part grows to fill the budget; the request's window is only its floor.
  int default_window() const override { return 0; }
  PolicyNeeds needs(const PolicyParams&) const override { return {}; }

  KeepSlots decide(const PolicyInput& in) const override {
    // Later slots score higher: the top of the unprotected ones are the most recent.
    std::vector<float> recency(in.positions.size());
    for (size_t i = 0; i < recency.size(); ++i) recency[i] = static_cast<float>(in.positions[i]);
    return keep_top(in, recency);
  }
};

}  // namespace

const KvPolicy* streaming_llm_policy() {
  static const StreamingLlm policy;
  return &policy;
}

}  // namespace sieve::kvcache
