#pragma once
// Where a harness setting (method, keep or budget, protocol) becomes an engine request: the one
// function the compression framework plugs into.

#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/request.h"
#include "eval/prompt.h"

namespace sieve::eval {

// aware: the whole prompt, question included, is compressed (what a server sees).
// agnostic: the context is compressed before the question is seen (KVPress's leaderboard).
enum class Protocol { kAware, kAgnostic };

const char* protocol_name(Protocol protocol);
// "aware" or "agnostic"; anything else is INVALID_ARGUMENT.
StatusOr<Protocol> parse_protocol(std::string_view name);

// One compression setting of the sweep.
struct MethodSetting {
  std::string method = "none";
  std::optional<double> keep;  // keep ratio of the prompt, (0, 1]
  std::optional<int> budget;   // or KV tokens kept per layer and KV head
  Protocol protocol = Protocol::kAware;
};

// The policies a sweep covers by default ("--methods all"): "none" (the full cache), then every
// policy of kvcache/policies' registry.
const std::vector<std::string>& policy_names();

// Top logprobs asked of every run, for the KL of fidelity: the engine's most.
inline constexpr int kFidelityTopLogprobs = engine::kMaxLogprobs;

// The engine request for `prompt` under `setting`: greedy, `max_tokens`, top-k logprobs, the
// setting's compression (the policy's defaults, the system message protected). Unimplemented (an
// "unsupported" row, never a faked one) for the agnostic protocol with compression: it needs the
// compressed prefix cache (issue 13 part 5). With "none" the protocol changes nothing.
StatusOr<engine::Request> make_request(const TaskPrompt& prompt, const MethodSetting& setting,
                                       int max_tokens);

}  // namespace sieve::eval
