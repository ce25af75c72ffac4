#pragma once
// The scheduler's seam to the engine (docs/design.md, "Scheduler"): each step's work, in tokens and
// pages, and what the engine reports back after running it.

#include <cstdint>
#include <string>
#include <vector>

#include "kvcache/kv_manager.h"
#include "scheduler/sequence.h"

namespace sieve::scheduler {

// One sequence of the step's flat batch: its tokens
// token_ids[num_computed_tokens .. num_computed_tokens + num_new_tokens) at those positions, with
// slots from the KvManager's page table of seq_id (already grown by this step).
struct ScheduledSeq {
  SeqId seq_id = 0;
  RequestId request_id = 0;
  int sample_index = 0;
  int num_new_tokens = 0;
  int num_computed_tokens = 0;  // before this step
  bool is_prefill_chunk = false;
  bool is_last_prefill_chunk = false;  // a prefill chunk that reaches the last token
  // The step reaches the sequence's last token: the engine samples from its logits (also once
  // for each fork of this sequence listed in the output).
  bool sample = false;
  std::vector<kvcache::PageId> new_pages;  // appended to its page table this step
};

// A child forked from `parent` for parallel sampling: it shares the parent's pages, runs no token
// this step, and takes its first token from the parent's logits of this step.
struct Fork {
  SeqId parent = 0;
  SeqId child = 0;
  int sample_index = 0;
};

// A sequence that ended; its pages are back in the pool.
struct FinishedSeq {
  SeqId seq_id = 0;
  RequestId request_id = 0;
  int sample_index = 0;
  FinishReason reason = FinishReason::kNone;
  std::string message;  // for kError
  std::vector<int32_t> output_token_ids;
  // No sequence of the request is left: its stream can close (an aborted request that had not
  // forked yet ends with fewer than n sequences).
  bool last_of_request = false;
};

// One step: decodes first, then prefill chunks, in that order in the flat batch.
struct SchedulerOutput {
  std::vector<ScheduledSeq> scheduled;
  std::vector<Fork> forks;
  std::vector<SeqId> preempted;       // lost their pages this step; recomputed later
  std::vector<FinishedSeq> finished;  // aborted or failed while scheduling
  // Copy-on-write: copy src to dst (all layers) before the step writes KV.
  std::vector<kvcache::PageCopy> page_copies;
  int num_scheduled_tokens = 0;

  bool empty() const { return scheduled.empty(); }
};

// What the engine sampled for one sequence whose ScheduledSeq (or Fork) asked for a sample.
struct SeqOutput {
  SeqId seq_id = 0;
  std::vector<int32_t> token_ids;  // one token; none is allowed only with a finish reason
  FinishReason finish = FinishReason::kNone;  // a stop the engine detected (kStop, kLength)
};

}  // namespace sieve::scheduler
