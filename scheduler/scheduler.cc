#include "scheduler/scheduler.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "core/check.h"
#include "kvcache/page_table.h"

namespace sieve::scheduler {

using kvcache::pages_for_tokens;

// Working state of one schedule() call. What it ran or forked is marked on the sequences
// (Sequence::scheduled_in_step), never a victim in this call.
struct Scheduler::Step {
  SchedulerOutput& output;
  int budget_left = 0;
  bool preempted_any = false;
  // Running sequences with prefill tokens left after what the step scheduled so far (partial
  // prefills), and how many of them are long.
  int num_partial_prefills = 0;
  int num_long_partial_prefills = 0;
};

Scheduler::Scheduler(const SchedulerConfig& config, kvcache::KvManager& kv)
    : config_(config), kv_(kv) {
  SIEVE_CHECK_GT(config.max_num_seqs, 0);
  // Every running sequence can then decode in every step.
  SIEVE_CHECK_GE(config.max_num_batched_tokens, config.max_num_seqs);
  SIEVE_CHECK_GT(config.max_model_len, 1);
  SIEVE_CHECK_GE(config.watermark_pages, 0);
  SIEVE_CHECK_GE(config.long_prefill_token_threshold, 0);
  SIEVE_CHECK_GT(config.max_num_partial_prefills, 0);
  SIEVE_CHECK_GT(config.max_long_partial_prefills, 0);
  long_prefill_threshold_ = config.long_prefill_token_threshold > 0
                                ? config.long_prefill_token_threshold
                                : std::max(1, config.max_num_batched_tokens / 2);
}

StatusOr<SeqId> Scheduler::add_request(RequestSpec spec) {
  const int num_prompt_tokens = static_cast<int>(spec.prompt_token_ids.size());
  if (num_prompt_tokens == 0) return InvalidArgumentError("prompt is empty");
  if (spec.max_tokens < 1) {
    return InvalidArgumentError("max_tokens must be at least 1, got " +
                                std::to_string(spec.max_tokens));
  }
  if (spec.n < 1 || spec.n > config_.max_num_seqs) {
    return InvalidArgumentError("n must be between 1 and " + std::to_string(config_.max_num_seqs) +
                                ", got " + std::to_string(spec.n));
  }
  if (num_prompt_tokens >= config_.max_model_len) {
    return InvalidArgumentError("prompt of " + std::to_string(num_prompt_tokens) +
                                " tokens leaves no room for output within max_model_len " +
                                std::to_string(config_.max_model_len));
  }
  ASSIGN_OR_RETURN(const int tokens_per_page, kv_.tokens_per_page(spec.kv_format));
  const int num_pages = pages_for_tokens(num_prompt_tokens, tokens_per_page);
  if (num_pages > kv_.pool().num_pages()) {
    return InvalidArgumentError("prompt of " + std::to_string(num_prompt_tokens) +
                                " tokens needs " + std::to_string(num_pages) +
                                " KV pages; the cache has " +
                                std::to_string(kv_.pool().num_pages()));
  }
  if (request_seqs_.contains(spec.request_id)) {
    return InvalidArgumentError("request_id " + std::to_string(spec.request_id) +
                                " is already in use");
  }
  Sequence& seq = new_sequence(spec.request_id);
  seq.num_pending_samples = spec.n;
  seq.token_ids = std::move(spec.prompt_token_ids);
  seq.num_prompt_tokens = num_prompt_tokens;
  seq.max_tokens = spec.max_tokens;
  seq.kv_format = spec.kv_format;
  seq.use_prefix_cache = spec.use_prefix_cache;
  waiting_.push_back(&seq);
  return seq.seq_id;
}

bool Scheduler::abort_request(RequestId request_id) {
  const auto it = request_seqs_.find(request_id);
  if (it == request_seqs_.end()) return false;
  bool any = false;
  for (SeqId id : it->second) {
    Sequence& seq = *seqs_.at(id);
    if (seq.abort_requested) continue;
    seq.abort_requested = true;
    pending_aborts_.push_back(id);
    any = true;
  }
  return any;
}

const Sequence* Scheduler::find(SeqId seq) const {
  const auto it = seqs_.find(seq);
  return it == seqs_.end() ? nullptr : it->second.get();
}

const SchedulerOutput& Scheduler::schedule() {
  SIEVE_CHECK(!awaiting_update_) << "schedule() before update() of the last step";
  ++num_schedules_;
  output_.scheduled.clear();
  output_.forks.clear();
  output_.preempted.clear();
  output_.finished.clear();
  output_.page_copies.clear();
  Step step{output_};
  step.budget_left = config_.max_num_batched_tokens;
  finish_aborted(step);
  schedule_running(step, /*decodes=*/true);
  count_partial_prefills(step);
  schedule_running(step, /*decodes=*/false);
  // As in vLLM: a step that had to preempt admits nobody (it would only thrash).
  if (!step.preempted_any) schedule_waiting(step);
  step.output.num_scheduled_tokens = config_.max_num_batched_tokens - step.budget_left;
  awaiting_update_ = !step.output.scheduled.empty();
  return output_;
}

void Scheduler::finish_aborted(Step& step) {
  for (SeqId id : pending_aborts_) {
    const auto it = seqs_.find(id);
    if (it == seqs_.end()) continue;  // finished before the abort was applied
    finish(*it->second, FinishReason::kAborted, "", &step.output.finished);
  }
  pending_aborts_.clear();
}

void Scheduler::schedule_running(Step& step, bool decodes) {
  // Long prefills leave room in the budget when another prefill could use it.
  const bool contended =
      !decodes && (step.num_partial_prefills > 1 || waiting_prefill_could_start(nullptr, step));
  for (size_t i = 0; i < running_.size() && step.budget_left > 0;) {
    Sequence& seq = *running_[i];
    const int num_left = seq.num_tokens() - seq.num_computed_tokens;
    if (num_left == 0 || seq.is_decode() != decodes) {
      ++i;
      continue;
    }
    int num_tokens = std::min(num_left, step.budget_left);
    if (contended && is_long_prefill(seq)) {
      num_tokens = std::min(num_tokens, long_prefill_threshold_);
    }
    // Victims are newer than `seq`, so only a removal of `seq` itself shifts index i.
    if (schedule_running_seq(seq, num_tokens, step) != RunResult::kRemoved) {
      ++i;
    }
  }
}

Scheduler::RunResult Scheduler::schedule_running_seq(Sequence& seq, int num_tokens, Step& step) {
  const SeqId id = seq.seq_id;
  while (!kv_.can_allocate(id, num_tokens)) {
    Sequence* victim = pick_victim(seq);
    if (victim == nullptr) break;
    preempt(*victim, step);
  }
  if (!kv_.can_allocate(id, num_tokens) && !seq.is_decode()) {
    num_tokens = max_tokens_that_fit(seq, num_tokens);
  }
  if (num_tokens == 0 || !kv_.can_allocate(id, num_tokens)) {
    if (exceeds_pool(seq)) {
      finish_oversized(seq, step);
    } else {
      preempt(seq, step);
    }
    return RunResult::kRemoved;
  }
  commit(seq, num_tokens, /*is_prefill_chunk=*/!seq.is_decode(), step);
  return RunResult::kScheduled;
}

void Scheduler::schedule_waiting(Step& step) {
  int num_seats = 0;  // sequences running now or forking later, against max_num_seqs
  for (const Sequence* seq : running_) num_seats += seq->num_pending_samples;
  count_partial_prefills(step);
  // FCFS, except that a long prefill with no slot lets the requests behind it pass.
  for (size_t i = 0; i < waiting_.size() && step.budget_left > 0;) {
    Sequence& seq = *waiting_[i];
    const int seats = seq.num_pending_samples;
    if (num_seats + seats > config_.max_num_seqs) break;
    if (!may_start_prefill(seq, step)) {
      if (!is_long_prefill(seq)) break;
      ++i;
      continue;
    }
    if (!admit(i, step)) break;  // admitted (or finished): no longer in the queue
    num_seats += seats;
  }
}

bool Scheduler::is_long_prefill(const Sequence& seq) const {
  return seq.num_tokens() > long_prefill_threshold_;
}

// A long prefill needs a long slot; a short one needs a slot only when this step's budget cannot
// finish it.
bool Scheduler::may_start_prefill(const Sequence& seq, const Step& step) const {
  const bool partial_slot = step.num_partial_prefills < config_.max_num_partial_prefills;
  if (is_long_prefill(seq)) {
    return partial_slot && step.num_long_partial_prefills < config_.max_long_partial_prefills;
  }
  return partial_slot || seq.num_tokens() <= step.budget_left;
}

bool Scheduler::waiting_prefill_could_start(const Sequence* except, const Step& step) const {
  return std::any_of(waiting_.begin(), waiting_.end(), [&](const Sequence* seq) {
    return seq != except && may_start_prefill(*seq, step);
  });
}

void Scheduler::count_partial_prefills(Step& step) const {
  step.num_partial_prefills = 0;
  step.num_long_partial_prefills = 0;
  for (const Sequence* seq : running_) {
    if (seq->num_computed_tokens == seq->num_tokens() || seq->is_decode()) continue;
    ++step.num_partial_prefills;
    if (is_long_prefill(*seq)) ++step.num_long_partial_prefills;
  }
}

bool Scheduler::admit(size_t waiting_index, Step& step) {
  Sequence& seq = *waiting_[waiting_index];
  const SeqId id = seq.seq_id;
  kv_.add_sequence(id, seq.kv_format);
  seq.num_computed_tokens = seq.use_prefix_cache ? kv_.attach_cached_prefix(id, seq.token_ids) : 0;
  int num_tokens = std::min(seq.num_tokens() - seq.num_computed_tokens, step.budget_left);
  if (is_long_prefill(seq) &&
      (step.num_partial_prefills > 0 || waiting_prefill_could_start(&seq, step))) {
    num_tokens = std::min(num_tokens, long_prefill_threshold_);
  }
  // With nothing running, the head of the queue may use the whole pool: the queue always moves.
  const bool alone = running_.empty();
  const int spare =
      kv_.num_available_pages() - (alone ? 0 : config_.watermark_pages + reserved_pages());
  const int num_step_pages = kv_.num_pages_needed(id, num_tokens);
  const int num_held_pages = kv_.page_table(id).num_pages() + num_step_pages;
  const int num_hold_pages = std::max(0, pages_to_hold(seq) - num_held_pages);
  if (num_step_pages + num_hold_pages > spare) {
    if (!alone) {
      kv_.free(id);
      seq.num_computed_tokens = 0;
      return false;
    }
    num_tokens = max_tokens_that_fit(seq, num_tokens);
    if (num_tokens == 0) {  // the pool is all free but for this sequence's own pages
      finish_oversized(seq, step);
      return true;
    }
  }
  waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(waiting_index));
  seq.status = SeqStatus::kRunning;
  seq.admit_order = next_admit_order_++;
  running_.push_back(&seq);
  // Even a lone last token (the rest came from the prefix cache) is a prefill chunk here: it
  // comes after the step's decodes in the batch.
  commit(seq, num_tokens, /*is_prefill_chunk=*/true, step);
  if (seq.num_computed_tokens < seq.num_tokens()) {
    ++step.num_partial_prefills;
    if (is_long_prefill(seq)) ++step.num_long_partial_prefills;
  }
  return true;
}

Sequence* Scheduler::pick_victim(const Sequence& seq) const {
  for (size_t i = running_.size(); i-- > 0;) {
    Sequence* candidate = running_[i];
    if (candidate->admit_order <= seq.admit_order) break;
    if (candidate->scheduled_in_step != num_schedules_) return candidate;
  }
  return nullptr;
}

void Scheduler::preempt(Sequence& seq, Step& step) {
  kv_.free(seq.seq_id);
  seq.num_computed_tokens = 0;
  seq.status = SeqStatus::kPreempted;
  ++seq.num_preemptions;
  running_.erase(std::find(running_.begin(), running_.end(), &seq));
  // Victims go newest first, so the oldest preempted sequence ends up at the head.
  waiting_.push_front(&seq);
  step.output.preempted.push_back(seq.seq_id);
  step.preempted_any = true;
}

void Scheduler::commit(Sequence& seq, int num_tokens, bool is_prefill_chunk, Step& step) {
  std::optional<kvcache::SlotAllocation> allocation =
      kv_.allocate_slots(seq.seq_id, seq.token_ids, num_tokens);
  SIEVE_CHECK(allocation.has_value()) << "sequence " << seq.seq_id << " checked but not allocated";
  ScheduledSeq out;
  out.seq_id = seq.seq_id;
  out.request_id = seq.request_id;
  out.sample_index = seq.sample_index;
  out.num_new_tokens = num_tokens;
  out.num_computed_tokens = seq.num_computed_tokens;
  out.is_prefill_chunk = is_prefill_chunk;
  seq.num_computed_tokens += num_tokens;
  const bool sample = seq.num_computed_tokens == seq.num_tokens();
  out.sample = sample;
  out.is_last_prefill_chunk = is_prefill_chunk && sample;
  out.new_pages = std::move(allocation->new_pages);
  step.output.page_copies.insert(step.output.page_copies.end(), allocation->copies.begin(),
                                 allocation->copies.end());
  step.output.scheduled.push_back(std::move(out));
  step.budget_left -= num_tokens;
  seq.scheduled_in_step = num_schedules_;
  if (sample) {
    seq.awaiting_sample = true;
    awaiting_samples_.push_back(seq.seq_id);
    if (seq.num_pending_samples > 1) fork_children(seq, step);
  }
}

void Scheduler::fork_children(Sequence& parent, Step& step) {
  for (int i = 1; i < parent.num_pending_samples; ++i) {
    Sequence& child = new_sequence(parent.request_id);
    child.sample_index = i;
    child.token_ids = parent.token_ids;
    child.num_prompt_tokens = parent.num_prompt_tokens;
    child.max_tokens = parent.max_tokens;
    child.kv_format = parent.kv_format;
    child.num_computed_tokens = parent.num_computed_tokens;
    child.status = SeqStatus::kRunning;
    child.admit_order = next_admit_order_++;
    kv_.fork(parent.seq_id, child.seq_id);
    running_.push_back(&child);
    child.scheduled_in_step = num_schedules_;
    child.awaiting_sample = true;
    step.output.forks.push_back(Fork{parent.seq_id, child.seq_id, i});
    awaiting_samples_.push_back(child.seq_id);
  }
  parent.num_pending_samples = 1;
}

int Scheduler::max_tokens_that_fit(const Sequence& seq, int num_tokens) const {
  int low = 0;  // fits
  int high = num_tokens;
  while (low < high) {
    const int mid = low + (high - low + 1) / 2;
    if (kv_.can_allocate(seq.seq_id, mid)) {
      low = mid;
    } else {
      high = mid - 1;
    }
  }
  return low;
}

bool Scheduler::exceeds_pool(const Sequence& seq) const {
  const kvcache::PageTable& table = kv_.page_table(seq.seq_id);
  return pages_for_tokens(table.num_tokens + 1, table.tokens_per_page) > kv_.pool().num_pages();
}

void Scheduler::finish_oversized(Sequence& seq, Step& step) {
  finish(seq, FinishReason::kError,
         "needs more KV pages than the cache has (" + std::to_string(kv_.pool().num_pages()) + ")",
         &step.output.finished);
}

int Scheduler::pages_to_hold(const Sequence& seq) const {
  if (!config_.kv_tokens_to_hold) return 0;
  return pages_for_tokens(config_.kv_tokens_to_hold(seq),
                          kv_.page_table(seq.seq_id).tokens_per_page);
}

int Scheduler::reserved_pages() const {
  int num_pages = 0;
  for (const Sequence* seq : running_) {
    num_pages += std::max(0, pages_to_hold(*seq) - kv_.page_table(seq->seq_id).num_pages());
  }
  return num_pages;
}

std::vector<FinishedSeq> Scheduler::update(std::span<const SeqOutput> outputs) {
  SIEVE_CHECK(awaiting_update_ || outputs.empty()) << "update() without a scheduled step";
  std::vector<FinishedSeq> finished;
  for (const SeqOutput& output : outputs) {
    const auto it = seqs_.find(output.seq_id);
    SIEVE_CHECK(it != seqs_.end() && it->second->awaiting_sample)
        << "output for an unsampled sequence " << output.seq_id;
    Sequence& seq = *it->second;
    seq.awaiting_sample = false;
    if (seq.abort_requested) continue;
    SIEVE_CHECK(output.token_ids.size() == 1 ||
                (output.token_ids.empty() && output.finish != FinishReason::kNone))
        << "sequence " << seq.seq_id << " got " << output.token_ids.size() << " tokens";
    seq.token_ids.insert(seq.token_ids.end(), output.token_ids.begin(), output.token_ids.end());
    FinishReason reason = output.finish;
    if (reason == FinishReason::kNone &&
        (seq.num_output_tokens() >= seq.max_tokens || seq.num_tokens() >= config_.max_model_len)) {
      reason = FinishReason::kLength;
    }
    if (reason != FinishReason::kNone) finish(seq, reason, "", &finished);
  }
  if (outputs.size() != awaiting_samples_.size()) {
    for (SeqId id : awaiting_samples_) {
      const auto it = seqs_.find(id);
      if (it == seqs_.end() || !it->second->awaiting_sample) continue;
      SIEVE_CHECK(it->second->abort_requested) << "no output for sampled sequence " << id;
      it->second->awaiting_sample = false;
    }
  }
  awaiting_samples_.clear();
  awaiting_update_ = false;
  return finished;
}

void Scheduler::finish(Sequence& seq, FinishReason reason, std::string message,
                       std::vector<FinishedSeq>* finished) {
  const SeqId id = seq.seq_id;
  if (kv_.has_sequence(id)) kv_.free(id);
  if (seq.status == SeqStatus::kRunning) {
    running_.erase(std::find(running_.begin(), running_.end(), &seq));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), &seq));
  }
  seq.status = SeqStatus::kFinished;
  std::vector<SeqId>& siblings = request_seqs_.at(seq.request_id);
  siblings.erase(std::find(siblings.begin(), siblings.end(), id));
  const bool last_of_request = siblings.empty();
  if (last_of_request) request_seqs_.erase(seq.request_id);
  const std::span<const int32_t> outputs = seq.output_token_ids();
  finished->push_back(FinishedSeq{id, seq.request_id, seq.sample_index, reason, std::move(message),
                                  std::vector<int32_t>(outputs.begin(), outputs.end()),
                                  last_of_request});
  seqs_.erase(id);
}

Sequence& Scheduler::new_sequence(RequestId request_id) {
  const SeqId id = next_seq_id_++;
  auto seq = std::make_unique<Sequence>();
  seq->seq_id = id;
  seq->request_id = request_id;
  request_seqs_[request_id].push_back(id);
  return *seqs_.emplace(id, std::move(seq)).first->second;
}

}  // namespace sieve::scheduler
