#pragma once
// The one model definition for every supported architecture (Llama 2/3.x, Mistral, Qwen2/2.5,
// Qwen3, SmolLM2), written once against the Backend ops. It runs one step of a flat (varlen)
// batch over the paged KV cache from index arrays already on the device (StepInputs); it knows
// nothing of requests, scheduling, uploads or graphs (TransformerRunner does those).

#include <memory>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/backend.h"
#include "models/config.h"
#include "models/step_batch.h"
#include "models/weights.h"

namespace sieve::models {

// One step's index arrays on the backend's device (TransformerRunner uploads them from a
// StepBatch) and the shape facts the kernels need. Views stay valid for the step; a decode graph
// records their addresses, so a runner keeps them in buffers fixed at start-up.
struct StepInputs {
  int64_t num_tokens = 0;
  int64_t num_logits = 0;
  bool logits_rows_are_tokens = false;  // logits rows are tokens 0..num_logits-1: no gather
  int min_q_len = 0, max_q_len = 0;     // over the batch's sequences
  TensorView token_ids, positions, slot_mapping, qo_indptr, kv_indptr, kv_indices, kv_lens;
  TensorView kv_head_lens, kv_gap_ends;            // empty: no compacted sequence
  TensorView kv_formats;                           // empty: every sequence in the layout's format
  TensorView logits_indices;                       // unread when logits_rows_are_tokens
  TensorView capture_rows, capture_slots;          // empty: no query captured
  TensorView token_inv_freq;                       // dynamic NTK only: [num_tokens, rotary_dim / 2]
  std::vector<StepBatch::MomentRows> moment_rows;  // StepBatch::moment_rows as they are
};

class Transformer {
 public:
  // Nothing is allocated in forward().
  static StatusOr<std::unique_ptr<Transformer>> create(const ModelConfig& config,
                                                       ModelWeights weights,
                                                       kernels::Backend& backend,
                                                       const StepLimits& limits);

  const ModelConfig& config() const { return config_; }
  const StepLimits& limits() const { return limits_; }
  kernels::Backend& backend() const { return backend_; }
  // Host seconds spent in attention calls so far (the step-time split; on an asynchronous
  // backend this counts launches only).
  double attention_seconds() const { return attention_seconds_; }
  int max_num_tokens() const { return limits_.max_num_tokens; }

  // Where StepInputs::capture_rows go: [num_layers, rows, num_heads * head_dim] in the compute
  // dtype on the backend's device, owned by the caller and valid for every later forward().
  void set_query_store(const TensorView& store);

  // The layers and the LM head over one step's inputs (the ops a decode graph records): writes
  // its K/V into `kv_arena` and returns the f32 logits of its logits rows, [num_logits, vocab],
  // valid until the next forward().
  TensorView forward(const StepInputs& in, const TensorView& kv_arena,
                     const kernels::KvCacheLayout& layout);
  // The first rows of the buffer forward() writes its logits to (a replayed graph's logits).
  TensorView logits(int64_t num_rows) const { return logits_.view().slice(0, 0, num_rows); }
  // Logits of more rows of the last forward() (its final hidden states stay until the next
  // one): `rows` (i32 on the device) index its first `num_tokens` tokens; `logits` is
  // [rows, vocab].
  void compute_logits(const TensorView& rows, int64_t num_tokens, const TensorView& logits);

 private:
  Transformer(const ModelConfig& config, ModelWeights weights, kernels::Backend& backend,
              const StepLimits& limits);
  Status allocate_workspace();
  void attention_block(int layer, const StepInputs& in, const TensorView& kv_arena,
                       const kernels::KvCacheLayout& layout);
  void mlp_block(int layer, int64_t num_tokens);

  ModelConfig config_;
  ModelWeights weights_;
  kernels::Backend& backend_;
  StepLimits limits_;
  RopeFrequencies rope_;
  double attention_seconds_ = 0;

  // Activations, [max_num_tokens, ...]; views of the first num_tokens rows are used per step.
  Tensor hidden_, normed_, qkv_, attn_, proj_, gate_up_, act_, gathered_;
  Tensor logits_;               // f32 [max_num_seqs, vocab]: forward()'s logits
  Tensor attention_workspace_;  // u8, the backend's attention scratch (may be empty)
  Tensor inv_freq_;             // the static RoPE frequencies on the device
  TensorView query_store_;
  std::vector<StepBatch::MomentRows> moment_rows_;  // of the current step
};

}  // namespace sieve::models
