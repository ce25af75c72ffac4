#pragma once
// The compression policy interface (docs/design.md, "Compression policies"). A policy is one small
// file in this folder: it parses its own parameters, declares the signals it needs, and decides
// which token slots each (layer, KV head) keeps. decide() is a pure function of its input: it
// touches no pages and keeps no per-sequence state (running per-slot statistics arrive in
// PolicyInput::state and leave through it). The engine computes the signals with backend ops,
// enforces protection (a decision that drops a protected slot is a bug: SIEVE_CHECK) and applies
// the decision through KvManager::compact and the backend's compaction op.

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace sieve::kvcache {

class ParamReader;

// The signals a policy reads, computed only for sequences whose policy acts in the step.
struct PolicyNeeds {
  // The last `window_queries` tokens' queries, for the two window-attention signals below.
  bool window_attention = false;            // per query head: [L, num_heads, S]
  bool window_attention_group_max = false;  // max over a KV head's query heads: [L, Hkv, S]
  bool key_norms = false;                   // [L, Hkv, S]
  bool value_norms = false;                 // [L, Hkv, S]
  bool key_anchor_dot = false;              // k̂·mean(k̂) per head (KeyDiff): [L, Hkv, S]
  // A float per slot that survives compaction with its slot (G-KV's global score); new slots
  // start at 0.
  bool slot_state = false;
  // ExpectedAttention's logit of every slot per query head, [L, num_heads, S]: the statistics
  // (mean, and covariance with `query_covariance`) of the prompt's pre-RoPE queries at positions
  // query_stats_from and later, rotated by the RoPE averaged over the `future_positions`
  // positions after the sequence's last token (kernels/backend.h, ExpectedLogitArgs).
  bool expected_logits = false;
  int query_stats_from = 0;
  int future_positions = 0;
  bool query_covariance = true;
  // KVzip's reconstruction attention, [L, Hkv, S]: at the prefill-end action the engine runs the
  // model over the prompt repeated (a question, then the prompt's text after the chat template's
  // prefix, in chunks of `reconstruction_chunk` tokens, each its own pass after the cache) and
  // gives each slot the max, over that pass's queries and the KV head's query heads, of its
  // softmax probability over the sinks, its chunk and the repeated tokens so far
  // (engine/compressor.h, ReconstructionPrompt). 0: not needed.
  int reconstruction_chunk = 0;

  bool any_window() const { return window_attention || window_attention_group_max; }
  // The prompt's queries are read (so its tokens must be computed, not served from the cache).
  bool reads_prompt_queries() const { return any_window() || expected_logits; }
};

// A policy's own parameters, parsed once per request. Each policy derives its Params from it.
struct PolicyParams {
  virtual ~PolicyParams() = default;
};

// Views of the signals PolicyNeeds asked for (empty otherwise). Every array is f32 with rows of
// `slot_stride` entries: row (layer, head) holds its head's valid slots first.
struct Signals {
  int num_queries = 0;                      // queries summed into the window-attention signals
  std::span<const float> window_attention;  // rows (layer, query head)
  std::span<const float> window_attention_group_max;  // rows (layer, KV head)
  std::span<const float> key_norms, value_norms, key_anchor_dot;
  std::span<const float> expected_logits;     // rows (layer, query head)
  std::span<const float> reconstruction_max;  // rows (layer, KV head); 0 outside the chunks
};

// One sequence at the moment its policy acts. Slots are virtual: head (l, h) has valid slots
// [0, valid_lens[l * num_kv_heads + h]), in token order.
struct PolicyInput {
  int num_layers = 0;
  int num_kv_heads = 0;
  int num_heads = 0;                    // query heads
  std::span<const int32_t> valid_lens;  // [L * Hkv]
  int slot_stride = 0;                  // row length of every per-slot array
  // Slots the decision must keep (sinks, the recent window, protected spans): [L * Hkv * S].
  std::span<const uint8_t> protected_slots;
  // Each slot's token position in the sequence: [L * Hkv * S].
  std::span<const int32_t> positions;
  int budget = 0;  // slots to keep per (layer, KV head), on average
  // The budget before rounding: n·keep_ratio in double for a keep_ratio (KVPress's n(1 - r)),
  // else `budget`. PyramidKV's layer budgets are computed from it.
  double budget_exact = 0;
  int window = 0;               // the recent window the request keeps (also the query window)
  bool at_prefill_end = false;  // else a decode-time action
  Signals signals;
  // Fair eviction (Protection::fair_eviction): ascending token positions where a new segment
  // begins; keep_top shares each row's budget among the segments by length. Empty: off.
  std::span<const int32_t> segment_bounds;
  std::span<float> state;  // with PolicyNeeds::slot_state: [L * Hkv * S], read and written
  const PolicyParams* params = nullptr;

  int row(int layer, int kv_head) const { return layer * num_kv_heads + kv_head; }
  int valid_len(int layer, int kv_head) const { return valid_lens[row(layer, kv_head)]; }
};

// What a policy decided: for each (layer, KV head) row, the virtual slots it keeps, strictly
// ascending (CSR: row r keeps slots[indptr[r] .. indptr[r + 1])).
struct KeepSlots {
  std::vector<int32_t> indptr;  // [L * Hkv + 1]
  std::vector<int32_t> slots;
};

class KvPolicy {
 public:
  virtual ~KvPolicy() = default;
  // The name requests use (`compression.method`), as its paper names it.
  virtual std::string_view name() const = 0;
  // Reads the policy's own entries of `compression.params` (the generic ones — sink, window,
  // interval, protection — are read before). Errors name `compression.params.<name>`.
  virtual StatusOr<std::shared_ptr<const PolicyParams>> parse(ParamReader& params) const;
  // Defaults of the generic parameters where the policy's paper differs from the engine's.
  virtual int default_sink() const { return 4; }
  virtual int default_window() const { return 32; }
  virtual int default_interval() const { return 64; }
  // True for a policy that acts once, at the prompt's end (a later `interval` is refused).
  virtual bool prefill_only() const { return false; }
  virtual PolicyNeeds needs(const PolicyParams& params) const = 0;
  // The slots to keep. Must keep every protected slot; keeps about `budget` a row on average.
  virtual KeepSlots decide(const PolicyInput& input) const = 0;
  // The most slots decide() keeps in one (layer, KV head) row for this budget, protection aside
  // (policies whose rows share a layer's or a sequence's budget unevenly say so). The scheduler
  // reserves pages for it.
  virtual int max_row_slots(const PolicyParams& params, int budget, int num_kv_heads) const {
    (void)params;
    (void)num_kv_heads;
    return budget;
  }
};

}  // namespace sieve::kvcache
