#pragma once
// The scheduler (vLLM v1 style): a plain function of sequence states, a token budget and free
// pages that decides, each step, which sequences run how many tokens. FCFS; decodes first, then
// prefill chunks; preemption by recompute when pages run out. It speaks only tokens and pages
// (through the KvManager) and knows nothing of models or devices. One thread (the engine's)
// drives it:
//
//   SchedulerOutput out = scheduler.schedule();   // apply out.page_copies, run out.scheduled
//   scheduler.update(sampled);                    // one SeqOutput per sampling sequence

#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "kvcache/kv_manager.h"
#include "scheduler/scheduler_output.h"
#include "scheduler/sequence.h"

namespace sieve::scheduler {

// KV tokens a sequence will hold at most while it runs (a compressed sequence's budget plus its
// decode interval; 0 for one that grows unbounded, which reserves nothing, as in vLLM).
// Admission keeps pages free for every running sequence to reach this.
using KvTokensToHold = std::function<int(const Sequence&)>;

struct SchedulerConfig {
  int max_num_batched_tokens = 2048;  // tokens of one step, all sequences together
  int max_num_seqs = 256;             // running sequences
  int max_model_len = 4096;           // tokens of one sequence, prompt and output
  // Pages admission leaves free so running sequences can grow without preempting at once.
  int watermark_pages = 0;
  // Unset: admission needs only the pages of the step's tokens (vLLM).
  KvTokensToHold kv_tokens_to_hold;
  // Fairness between prefills (vLLM's flags of the same names). A sequence with more tokens
  // than long_prefill_token_threshold to prefill is a long prefill: in a step where another
  // prefill could run, it gets at most that many tokens, so a request that arrives during it is
  // admitted in the next step. Alone, it takes the whole budget. 0: max_num_batched_tokens / 2.
  int long_prefill_token_threshold = 0;
  // Prefills left unfinished by a step (partial) at once, and how many of them may be long. A
  // waiting long prefill with no long slot is passed by shorter requests behind it.
  int max_num_partial_prefills = 4;
  int max_long_partial_prefills = 1;
};

class Scheduler {
 public:
  // `kv` outlives the scheduler; the scheduler is the only one that allocates or frees its
  // sequences (the engine may compact them between steps).
  Scheduler(const SchedulerConfig& config, kvcache::KvManager& kv);

  // Queues a request (FCFS) and returns its first sequence's id. INVALID_ARGUMENT naming the
  // field for an empty prompt, bad max_tokens or n, a prompt past max_model_len or past the
  // pool, an unusable kv_format, or a request id already in use.
  StatusOr<SeqId> add_request(RequestSpec spec);
  // Aborts every sequence of the request: the next schedule() frees them before it schedules
  // anything and lists them as finished. False when the request is unknown or already aborted.
  bool abort_request(RequestId request_id);

  // Decides the next step. Call update() for it before the next schedule(). The output stays
  // valid until the next schedule() (its memory is reused: a warm step allocates nothing).
  const SchedulerOutput& schedule();
  // Appends the sampled tokens of the last step and ends sequences that stop (the engine's
  // finish, max_tokens, max_model_len); returns those, their pages already freed.
  std::vector<FinishedSeq> update(std::span<const SeqOutput> outputs);

  // A live sequence, or null once it finished.
  const Sequence* find(SeqId seq) const;
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  bool has_unfinished() const { return !seqs_.empty(); }

 private:
  struct Step;
  enum class RunResult { kScheduled, kRemoved };

  // The named steps of schedule().
  void finish_aborted(Step& step);
  void schedule_running(Step& step, bool decodes);
  void schedule_waiting(Step& step);

  // Prefill fairness: the long-prefill cap and the partial-prefill slots.
  bool is_long_prefill(const Sequence& seq) const;
  bool may_start_prefill(const Sequence& seq, const Step& step) const;
  bool waiting_prefill_could_start(const Sequence* except, const Step& step) const;
  void count_partial_prefills(Step& step) const;

  // Helpers of the steps: allocation with preemption, admission, bookkeeping.
  RunResult schedule_running_seq(Sequence& seq, int num_tokens, Step& step);
  bool admit(size_t waiting_index, Step& step);
  Sequence* pick_victim(const Sequence& seq) const;
  void preempt(Sequence& seq, Step& step);
  void commit(Sequence& seq, int num_tokens, bool is_prefill_chunk, Step& step);
  void fork_children(Sequence& parent, Step& step);
  int max_tokens_that_fit(const Sequence& seq, int num_tokens) const;
  bool exceeds_pool(const Sequence& seq) const;
  void finish_oversized(Sequence& seq, Step& step);
  int pages_to_hold(const Sequence& seq) const;
  int reserved_pages() const;
  void finish(Sequence& seq, FinishReason reason, std::string message,
              std::vector<FinishedSeq>* finished);
  Sequence& new_sequence(RequestId request_id);

  SchedulerConfig config_;
  int long_prefill_threshold_ = 0;  // config_'s, 0 resolved
  kvcache::KvManager& kv_;
  std::unordered_map<SeqId, std::unique_ptr<Sequence>> seqs_;
  std::unordered_map<RequestId, std::vector<SeqId>> request_seqs_;
  std::deque<Sequence*> waiting_;   // FCFS; preempted sequences go to the front
  std::vector<Sequence*> running_;  // in admit_order
  std::vector<SeqId> pending_aborts_;
  std::vector<SeqId> awaiting_samples_;  // sequences the last step asked the engine to sample
  bool awaiting_update_ = false;
  SchedulerOutput output_;        // the last schedule()'s
  uint64_t num_schedules_ = 0;    // schedule() calls so far: Sequence::scheduled_in_step
  SeqId next_seq_id_ = 1;
  uint64_t next_admit_order_ = 1;
};

}  // namespace sieve::scheduler
