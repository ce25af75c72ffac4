#pragma once
// The Transformer as a ModelRunner: it owns what a step needs besides the weights and the
// activations. Each step it uploads the StepBatch's index arrays into device buffers fixed at
// start-up (in place where the backend's memory is the host's), computes dynamic-NTK RoPE rows,
// and either replays the decode graph of the batch's bucket (the batch padded to the bucket's
// size) or runs the model eagerly.

#include <memory>
#include <vector>

#include "models/model_runner.h"
#include "models/transformer.h"

namespace sieve::models {

class TransformerRunner final : public ModelRunner {
 public:
  // `model` outlives the runner; the index buffers are allocated here, sized by its limits.
  static StatusOr<std::unique_ptr<TransformerRunner>> create(Transformer& model);

  const ModelConfig& config() const override { return model_.config(); }
  const StepLimits& limits() const override { return model_.limits(); }
  void bind_kv_cache(const TensorView& kv_arena, const kernels::KvCacheLayout& layout) override;
  // On a device backend runs the largest prefill step once (kernels and cuBLAS load lazily: the
  // first request would pay for it), then captures the decode graphs (one per batch-size
  // bucket; a backend without graphs, or max_graph_seqs 0, keeps every step eager).
  Status warm_up() override;
  void set_query_store(const TensorView& store) override { model_.set_query_store(store); }
  TensorView execute(const StepBatch& batch) override;
  void compute_logits(const std::vector<int32_t>& rows, const TensorView& logits) override;
  int num_graphs() const override { return static_cast<int>(graph_buckets_.size()); }

 private:
  explicit TransformerRunner(Transformer& model);
  Status allocate_inputs();
  // The first n entries of `host` on the backend's device (in place where that is the host).
  TensorView upload(const std::vector<int32_t>& host, const Tensor& device_buffer, int64_t n);
  // Every index array of the batch to the device, into inputs_.
  void upload_batch(const StepBatch& batch);
  void rope_frequencies(const StepBatch& batch);
  Status capture_graphs();
  // The graph bucket (index into graph_buckets_) of a decode batch, or -1 to run it eagerly.
  int graph_bucket(const StepBatch& batch) const;
  // `batch` padded to `size` sequences of one token each, into padded_.
  void pad_decode_batch(const StepBatch& batch, int size);

  Transformer& model_;
  kernels::Backend& backend_;
  TensorView kv_arena_;
  kernels::KvCacheLayout layout_{};
  int64_t last_num_tokens_ = 0;  // tokens of the last execute(), whose hidden states remain

  // Decode graphs: bucket sizes (ascending) and their backend graph ids.
  std::vector<int> graph_buckets_, graph_ids_;
  StepBatch padded_;  // a decode batch padded to its bucket

  // Index arrays of the current step on the device, and their views.
  Tensor ids_, positions_, slots_, qo_indptr_, kv_indptr_, kv_indices_, kv_lens_, head_lens_,
      gap_ends_, kv_formats_, rows_, capture_rows_, capture_slots_, token_inv_freq_;
  Tensor host_inv_freq_;  // dynamic NTK only
  StepInputs inputs_;
};

}  // namespace sieve::models
