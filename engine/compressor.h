#pragma once
// The engine's compression stage: per-request KV compression policies (kvcache/policies) applied
// inside the continuously batched step. For each sequence whose request asked for a policy it
//   - plans which tokens' queries the model keeps (the window before each action) into a query
//     store of `num_rings` rings of kMaxQueryWindow rows;
//   - after the step, for sequences whose policy acts (prefill end; every `interval` decode
//     tokens once over budget), computes the signals the policy needs with Backend::kv_signals
//     (KVzip's after a pass of the model over the prompt repeated: reconstruct()), asks the
//     policy, checks protection, and compacts: KvManager::compact, copy_pages, compact_kv. The
//     freed pages return to the pool in the same step.
// One thread (the engine's) owns it; the policies' decisions of one step run on OpenMP threads
// (all the sequences of a batch tend to act in the same step, and each decision is ~1-2 ms of
// host work at 8B geometry).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/backend.h"
#include "kvcache/kv_manager.h"
#include "kvcache/policies/spec.h"
#include "models/model_runner.h"
#include "models/tokenizer/tokenizer.h"
#include "scheduler/scheduler.h"

namespace sieve::engine {

// Counters for metrics and benchmarks (read from any thread).
struct CompressionStats {
  std::atomic<int64_t> actions{0};          // compactions applied
  std::atomic<int64_t> evicted_tokens{0};   // slots dropped, as tokens (mean over heads)
  std::atomic<int64_t> skipped_actions{0};  // due but not applied (no query ring, pool short)
  // Wall time of act()'s phases (host side; a device backend's kernels finish later): lengths
  // and signals, the parallel decisions, compaction.
  std::atomic<int64_t> gather_ns{0}, decide_ns{0}, commit_ns{0};
};

// KVzip's reconstruction prompt for the served model, as KVPress builds it from the tokenizer's
// chat template: a user turn around the prompt splits the template into a prefix (the tokens
// before the user's text, which the reconstruction skips) and a suffix (the assistant's turn).
// Chunk c of the prompt after the prefix is reconstructed from
//   question (c = 0: first_question; else next_question and the previous chunk's last 8 tokens),
//   suffix, the chunk's tokens.
struct ReconstructionPrompt {
  bool available = false;  // false: no tokenizer; kvzip's actions are skipped
  int prefix_length = 0;
  std::vector<int32_t> first_question, next_question, suffix;
  static constexpr int kPreviousTokens = 8;
};
// Built with the tokenizer's own chat template (none: prefix "", suffix "\n", as KVPress).
ReconstructionPrompt make_reconstruction_prompt(const models::Tokenizer& tokenizer);

// Copies each page's KV to its copy (all layers): copy-on-write from the scheduler or a
// compaction. Nothing for an empty list.
void copy_pages(kernels::Backend& backend, const TensorView& arena,
                const kernels::KvCacheLayout& layout, std::span<const kvcache::PageCopy> copies);

class Compressor {
 public:
  // `arena` and `layout` are the engine's KV arena; `num_rings` sequences may gather queries at
  // once (0: policies that score with queries never act). `reconstruction` serves kvzip.
  static StatusOr<std::unique_ptr<Compressor>> create(
      kernels::Backend& backend, models::ModelRunner& model, kvcache::KvManager& kv,
      const TensorView& arena, const kernels::KvCacheLayout& layout, int num_rings,
      ReconstructionPrompt reconstruction = {});
  ~Compressor();

  // A sequence starts with a compression request (or starts again after a preemption).
  void add(kvcache::SeqId seq, std::shared_ptr<const kvcache::CompressionSpec> spec,
           int prompt_tokens, int system_prompt_tokens);
  void fork(kvcache::SeqId parent, kvcache::SeqId child);
  // The sequence lost its cache (preempted): it starts over at its next prefill.
  void reset(kvcache::SeqId seq);
  void remove(kvcache::SeqId seq);
  bool tracks(kvcache::SeqId seq) const { return seqs_.contains(seq); }
  // The most KV tokens `seq` holds while it runs: its policy's largest row after an action, or
  // its protected tokens where they are more, plus the interval it grows before the next
  // action. 0 for a sequence that is not compressed or compresses only at prefill end (it grows
  // like any other). The scheduler's KvTokensToHold.
  int kv_tokens_to_hold(kvcache::SeqId seq) const;

  // Adds the step's query captures to `batch` (built for `out`, in the order of out.scheduled).
  void plan_captures(const scheduler::SchedulerOutput& out, const scheduler::Scheduler& scheduler,
                     models::StepBatch& batch);
  // After the step ran and the scheduler took its outputs: the policies that are due act.
  void act(const scheduler::SchedulerOutput& out, const scheduler::Scheduler& scheduler);

  const CompressionStats& stats() const { return stats_; }
  // Called on the engine thread after each compaction with the token positions every (layer, KV
  // head) kept (tests and the eval harness look at decisions through it).
  using Observer =
      std::function<void(kvcache::SeqId, const std::vector<std::vector<int32_t>>& kept_positions)>;
  void set_observer(Observer observer) { observer_ = std::move(observer); }
  // Replaces the reconstruction prompt (a model served without a tokenizer; tests).
  void set_reconstruction_prompt(ReconstructionPrompt prompt) {
    reconstruction_ = std::move(prompt);
  }
  // Durations of the actions since the last call (seconds each), for a histogram. Thread-safe.
  std::vector<double> take_action_seconds();

 private:
  struct SeqState;
  struct Moments;
  // One due action, gathered (lengths, signals) and committed (compaction) on the engine thread,
  // decided on any thread: decide() reads only the action and its sequence's state.
  struct Action {
    kvcache::SeqId seq = 0;
    SeqState* st = nullptr;
    bool at_prefill_end = false;
    int cached_tokens = 0;
    int ring = -1;  // the query ring holding the window, and its captured rows
    int num_captured = 0;
    std::shared_ptr<Moments> moments;
    bool wanted = false;  // gathered: over budget, with what its policy reads
    std::chrono::steady_clock::time_point start;
    double seconds = 0;  // its own work, for the action histogram
    // Gathered.
    std::vector<int32_t> valid_lens;   // [L * Hkv]
    std::vector<int32_t> prefix_lens;  // KvManager::head_lengths, copied
    int gap_end = 0;
    int slot_stride = 0;
    int num_queries = 0;
    std::vector<float> window_attention, group_max, key_norms, value_norms, anchor_dot,
        expected_logits, reconstruction_max;
    std::vector<int32_t> prompt;  // kvzip: the cached prompt's tokens, for its reconstruction
    // Decided.
    std::vector<int32_t> positions;  // [L * Hkv * slot_stride]
    std::vector<float> state;        // PolicyNeeds::slot_state
    kvcache::KeepSlots keep;
    std::vector<int32_t> counts;    // kept slots per row
    std::vector<int32_t> physical;  // [L * Hkv * max_keep]: kept slots' arena slots
    int max_keep = 1;
    std::vector<std::vector<int32_t>> kept_positions;
    std::vector<std::vector<float>> kept_state;
  };

  Compressor(kernels::Backend& backend, models::ModelRunner& model, kvcache::KvManager& kv,
             const TensorView& arena, const kernels::KvCacheLayout& layout,
             const models::ModelConfig& config);
  // Adds the step's prompt rows of `s` (token rows from `first_row` in the batch) to the query
  // statistics of its sequence (PolicyNeeds::expected_logits).
  void plan_moments(const scheduler::ScheduledSeq& s, SeqState& st, int first_row,
                    models::StepBatch& batch);
  // An action's lengths and signals; false when it has nothing to do (within budget) or
  // cannot act (its window or statistics missing: counted as skipped).
  bool gather(Action& a);
  // The policy's decision and what compaction needs from it. Thread-safe across actions.
  void decide(Action& a) const;
  // Compacts the sequence to the decision; nothing changes when the pool is short of pages.
  void commit(Action& a);
  // The signals the action's policy reads, of its sequence, into the action's host arrays.
  void compute_signals(Action& a);
  // KVzip: runs the model over the reconstruction of the action's prompt, its K/V in pages
  // borrowed after the sequence's own, and gathers the reconstruction attention max into
  // a.reconstruction_max. False (nothing changed) without a free query ring, pages or a
  // tokenizer's prompt.
  bool reconstruct(Action& a);
  // ExpectedAttention's logits of one sequence into expected_logits_ (device).
  void compute_expected_logits(const kernels::ExpectedLogitArgs& cache, const Action& a);
  void release_ring(SeqState& st);
  Status ensure_signal_buffers(int slot_stride);

  kernels::Backend& backend_;
  models::ModelRunner& model_;
  kvcache::KvManager& kv_;
  TensorView arena_;
  kernels::KvCacheLayout layout_;
  int num_heads_ = 0;
  models::ModelConfig config_;  // for the averaged RoPE of ExpectedAttention
  Tensor query_store_;          // [num_layers, num_rings * kMaxQueryWindow, num_heads * head_dim]
  // Query statistics (ExpectedAttention) are allocated per sequence, at most max_moment_sets_
  // at once: num_layers · num_heads · head_dim · (head_dim + 1) floats each.
  int max_moment_sets_ = 0;
  int moment_sets_ = 0;
  std::vector<int> free_rings_;
  std::unordered_map<kvcache::SeqId, std::unique_ptr<SeqState>> seqs_;
  // Device outputs of kv_signals, grown to the longest sequence seen.
  int signal_stride_ = 0;
  Tensor window_attention_, group_max_, key_norms_, value_norms_, anchor_dot_, expected_logits_;
  ReconstructionPrompt reconstruction_;
  Tensor reconstruction_max_;  // [L, Hkv, stride] of the pass in flight, grown as needed
  CompressionStats stats_;
  Observer observer_;
  std::mutex seconds_mutex_;
  std::vector<double> action_seconds_;
};

}  // namespace sieve::engine
