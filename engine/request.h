#pragma once
// The engine's in-process API types: what a request asks, and the chunks its stream yields.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampling_params.h"
#include "kvcache/policies/spec.h"

namespace sieve::engine {

using RequestId = uint64_t;

struct Request {
  std::vector<int32_t> prompt_token_ids;
  SamplingParams params;
  // KV compression for this request (kvcache::parse_compression); null = the full cache.
  std::shared_ptr<const kvcache::CompressionSpec> compression;
  // The prompt's first tokens that are its system prompt (chat requests): protected from
  // eviction when the compression asks (protect_system_prompt, the default).
  int system_prompt_tokens = 0;
};

// One token's log-probability, with the most likely alternatives when asked.
struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // (token id, logprob), most likely first
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;  // over all n samples
  int cached_prompt_tokens = 0;
  // The KV cache the request held at its end, summed over its n samples as each finished: token
  // slots with K/V (prompt plus generated tokens, less the last one, never written; with
  // compaction, the mean kept per (layer, KV head)) and the bytes of the pages holding them (a
  // page the samples share counts once per sample).
  int kv_tokens_kept = 0;
  int64_t kv_bytes = 0;
};

// One chunk of a request's stream: what one sample (index) gained in one step.
struct RequestOutput {
  int index = 0;                    // which of the n samples
  std::vector<int32_t> token_ids;   // new tokens
  std::string text;                 // new text (never a partial stop string)
  std::vector<TokenLogprob> logprobs;         // for token_ids, when asked
  std::vector<TokenLogprob> prompt_logprobs;  // once, in the first chunk, when asked
  std::optional<std::string> finish_reason;   // "stop", "length", "abort" or "error"
  std::string error;                          // with finish_reason "error"
  bool finished_request = false;    // the last chunk of the whole request: usage is final
  Usage usage;
  // With finished_request: when the request's first step began (the end of its queue time);
  // the epoch when it never ran.
  std::chrono::steady_clock::time_point first_scheduled_time;
};

}  // namespace sieve::engine
