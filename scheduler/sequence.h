#pragma once
// A sequence as the scheduler sees it: its token ids (prompt, then output) and how many of them
// are in the KV cache. A request with n > 1 starts as one sequence and forks n - 1 children when
// its prompt is in the cache.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "kvcache/formats.h"
#include "kvcache/kv_manager.h"

namespace sieve::scheduler {

using kvcache::SeqId;
// The engine's id of a request; all sequences of a request share it.
using RequestId = uint64_t;

// Where a sequence is. Waiting and preempted sequences queue for admission; a preempted one has
// lost its pages and is recomputed from its token ids.
enum class SeqStatus : uint8_t { kWaiting, kRunning, kPreempted, kFinished };

// Why a sequence ended.
enum class FinishReason : uint8_t {
  kNone,
  kStop,     // the engine saw a stop condition
  kLength,   // max_tokens or max_model_len
  kAborted,  // abort_request (client gone)
  kError,    // the scheduler cannot serve it (it needs more KV pages than the whole pool)
};
std::string_view finish_reason_name(FinishReason reason);

// What a request asks of the scheduler; the engine validates sampling itself.
struct RequestSpec {
  RequestId request_id = 0;
  std::vector<int32_t> prompt_token_ids;
  int max_tokens = 16;  // output tokens per sequence
  int n = 1;            // parallel samples (sequences) of the request
  kvcache::KvFormatId kv_format = kvcache::KvFormatId::kBF16;
  // Off for requests that need every prompt position computed (prompt logprobs).
  bool use_prefix_cache = true;
};

// One sequence's scheduling state. Read-only outside the scheduler.
struct Sequence {
  SeqId seq_id = 0;
  RequestId request_id = 0;
  int sample_index = 0;  // 0 for the first sequence of a request, then 1 .. n-1
  // Sequences the next sampling of this one draws: n until the prompt is in the cache and the
  // children fork, then 1. Each counts against max_num_seqs from admission on.
  int num_pending_samples = 1;
  std::vector<int32_t> token_ids;  // prompt, then output
  int num_prompt_tokens = 0;
  int max_tokens = 0;
  kvcache::KvFormatId kv_format = kvcache::KvFormatId::kBF16;
  bool use_prefix_cache = true;
  // Tokens whose KV is in the cache (or scheduled into it by the step in flight).
  int num_computed_tokens = 0;
  SeqStatus status = SeqStatus::kWaiting;
  uint64_t admit_order = 0;  // larger = admitted more recently (victims are the largest)
  int num_preemptions = 0;
  bool abort_requested = false;
  // Scheduler bookkeeping: the schedule() call that last ran or forked it (never a victim in
  // that call), and whether the step in flight asked for its sample.
  uint64_t scheduled_in_step = 0;
  bool awaiting_sample = false;

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
  int num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  std::span<const int32_t> output_token_ids() const {
    return std::span<const int32_t>(token_ids).subspan(num_prompt_tokens);
  }
  // One token left, a generated one: the step decodes. Anything more is a prefill chunk
  // (the prompt, or prompt and output again after a preemption).
  bool is_decode() const {
    return num_tokens() - num_computed_tokens == 1 && num_computed_tokens >= num_prompt_tokens;
  }
};

}  // namespace sieve::scheduler
