#pragma once
// The one model definition for every supported architecture (Llama 2/3.x, Mistral, Qwen2/2.5,
// Qwen3, SmolLM2), written once against the Backend ops. It runs one step of a flat (varlen)
// batch over the paged KV cache; it knows nothing of requests or scheduling.

#include <memory>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/backend.h"
#include "models/config.h"
#include "models/weights.h"

namespace sieve::models {

// One step's flat batch (docs/design.md, "The step batch"), host arrays the runner copies to the
// device. Sequence s owns tokens [qo_indptr[s], qo_indptr[s+1]) and pages
// kv_indices[kv_indptr[s] .. kv_indptr[s+1]); kv_lens[s] counts its valid slots including this
// step's tokens.
struct StepBatch {
  std::vector<int32_t> token_ids;     // [num_tokens]
  std::vector<int32_t> positions;     // [num_tokens]
  std::vector<int32_t> slot_mapping;  // [num_tokens]: where each token's K/V is written
  std::vector<int32_t> qo_indptr;     // [num_seqs + 1]
  std::vector<int32_t> kv_indptr;     // [num_seqs + 1]
  std::vector<int32_t> kv_indices;    // page ids
  std::vector<int32_t> kv_lens;       // [num_seqs]
  // Optional, together: compacted sequences' valid slots (kernels::AttentionArgs).
  std::vector<int32_t> kv_head_lens;  // [num_seqs, num_layers, num_kv_heads]
  std::vector<int32_t> kv_gap_ends;   // [num_seqs]
  // Optional [num_seqs]: each sequence's kvcache::KvFormatId when the batch mixes formats
  // (kernels::AttentionArgs::kv_formats); empty: all are of the layout's format.
  std::vector<int32_t> kv_formats;
  std::vector<int32_t> logits_indices;  // token rows whose logits are wanted
  // Optional [num_seqs]: the length dynamic-NTK RoPE computes a sequence's frequencies for
  // (default: its largest position in the step plus one). A chunked prompt passes the whole
  // prompt's length, as transformers sees the prompt in one forward.
  std::vector<int32_t> rope_lens;
  // Optional, together: token rows whose post-RoPE queries are kept for compression policies;
  // row capture_rows[i] of every layer goes to row capture_slots[i] of the query store
  // (Transformer::set_query_store). Steps that capture run eagerly.
  std::vector<int32_t> capture_rows;
  std::vector<int32_t> capture_slots;
  // Optional: query statistics for compression policies (ExpectedAttention). The pre-RoPE
  // queries of token rows [begin, end) are added, layer by layer, to `moments`: f32 [num_layers,
  // num_heads, head_dim * (head_dim + 1)] on the backend's device (accumulate_query_moments).
  // Steps that gather them run eagerly.
  struct MomentRows {
    int32_t begin = 0, end = 0;
    TensorView moments;
  };
  std::vector<MomentRows> moment_rows;

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
  int num_seqs() const { return static_cast<int>(kv_lens.size()); }
};

// Bounds of one step, fixed at start-up: all activation and index memory is allocated then.
struct StepLimits {
  int max_num_tokens = 512;      // tokens in one step (the prefill chunk size)
  int max_num_seqs = 256;        // sequences in one step
  int max_kv_indices = 1 << 16;  // page-table entries of one step, over all its sequences
  // Decode steps of up to this many sequences replay graphs captured per batch-size bucket, on
  // a backend that has them (0: every step eager, vLLM's --enforce-eager).
  int max_graph_seqs = 256;
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
  // Host seconds spent in attention calls so far (the step-time split; on an asynchronous
  // backend this counts launches only).
  double attention_seconds() const { return attention_seconds_; }
  int max_num_tokens() const { return limits_.max_num_tokens; }

  // Readies the runner for steps over this KV arena, once at start-up: on a device backend runs
  // the largest prefill step once (kernels and cuBLAS load lazily: the first request would pay
  // for it), then captures the decode graphs (one per batch-size bucket; a backend without
  // graphs, or max_graph_seqs 0, keeps every step eager). Steps over another arena run eagerly.
  Status warm_up(const TensorView& kv_arena, const kernels::KvCacheLayout& layout);
  int num_graphs() const { return static_cast<int>(graph_buckets_.size()); }
  // Where StepBatch::capture_rows go: [num_layers, rows, num_heads * head_dim] in the compute
  // dtype on the backend's device, owned by the caller and valid for every later forward().
  void set_query_store(const TensorView& store);

  // Runs the batch: writes its K/V into `kv_arena` and returns the f32 logits of the rows named
  // by batch.logits_indices, [num_logits, vocab], valid until the next forward().
  TensorView forward(const StepBatch& batch, const TensorView& kv_arena,
                     const kernels::KvCacheLayout& layout);
  // Logits of more rows of the last forward() (its final hidden states stay until the next
  // one): `rows` index its tokens; `logits` is [rows.size(), vocab].
  void compute_logits(const std::vector<int32_t>& rows, const TensorView& logits);

 private:
  Transformer(const ModelConfig& config, ModelWeights weights, kernels::Backend& backend,
              const StepLimits& limits);
  Status allocate_workspace();
  // The first n entries of `host` on the backend's device (in place on the CPU).
  TensorView upload(const std::vector<int32_t>& host, const Tensor& device_buffer, int64_t n);
  // Every index array of the batch to the device (the views below).
  void upload_batch(const StepBatch& batch);
  void rope_frequencies(const StepBatch& batch);
  // The layers and the LM head over the uploaded batch: the ops a decode graph records.
  void run(int64_t num_tokens, int64_t num_logits, bool logits_rows_are_tokens,
           const TensorView& kv_arena, const kernels::KvCacheLayout& layout, int min_q_len,
           int max_q_len);
  void attention_block(int layer, const TensorView& kv_arena,
                       const kernels::KvCacheLayout& layout, int64_t num_tokens, int min_q_len,
                       int max_q_len);
  void mlp_block(int layer, int64_t num_tokens);
  Status capture_graphs(const TensorView& kv_arena, const kernels::KvCacheLayout& layout);
  // The graph bucket (index into graph_buckets_) of a decode batch, or -1 to run it eagerly.
  int graph_bucket(const StepBatch& batch, const TensorView& kv_arena) const;
  // `batch` padded to `size` sequences of one token each, into padded_.
  void pad_decode_batch(const StepBatch& batch, int size);

  ModelConfig config_;
  ModelWeights weights_;
  kernels::Backend& backend_;
  StepLimits limits_;
  RopeFrequencies rope_;
  double attention_seconds_ = 0;
  int64_t last_num_tokens_ = 0;  // tokens of the last forward(), whose hidden states remain

  // Decode graphs: bucket sizes (ascending) and their backend graph ids, over one arena.
  std::vector<int> graph_buckets_, graph_ids_;
  const void* graph_arena_ = nullptr;
  StepBatch padded_;  // a decode batch padded to its bucket

  // Activations, [max_num_tokens, ...]; views of the first num_tokens rows are used per step.
  Tensor hidden_, normed_, qkv_, attn_, proj_, gate_up_, act_;
  Tensor logits_;                // f32 [max_num_seqs, vocab]: forward()'s logits
  Tensor attention_workspace_;   // u8, the backend's attention scratch (may be empty)
  // Index arrays of the current step on the device.
  Tensor ids_, positions_, slots_, qo_indptr_, kv_indptr_, kv_indices_, kv_lens_, head_lens_,
      gap_ends_, kv_formats_, rows_, capture_rows_, capture_slots_, inv_freq_, token_inv_freq_,
      gathered_;
  Tensor host_inv_freq_;  // dynamic NTK only
  TensorView token_inv_freq_view_;
  TensorView ids_view_, positions_view_, slots_view_, qo_indptr_view_, kv_indptr_view_,
      kv_indices_view_, kv_lens_view_, head_lens_view_, gap_ends_view_, kv_formats_view_,
      rows_view_, capture_rows_view_, capture_slots_view_;
  TensorView query_store_;
  std::vector<StepBatch::MomentRows> moment_rows_;  // of the current step
};

}  // namespace sieve::models
