#pragma once
// What the engine runs a step on: a flat StepBatch in, the logits of its sampled rows out. The
// engine knows nothing else of the model, so it runs as well against a scripted fake
// (tests/support/fake_model_runner.h) as against the Transformer (TransformerRunner, which owns
// the step's device inputs, decode-graph buckets and their padding).

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/backend.h"
#include "models/config.h"
#include "models/step_batch.h"

namespace sieve::models {

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  virtual const ModelConfig& config() const = 0;
  // The most tokens and sequences a step may hold (fixed at start-up).
  virtual const StepLimits& limits() const = 0;

  // Once at start-up: the KV arena every later step reads and writes.
  virtual void bind_kv_cache(const TensorView& kv_arena, const kernels::KvCacheLayout& layout) = 0;
  // Readies the runner for serving over the bound arena (a device runs its largest step once
  // and captures its decode graphs).
  virtual Status warm_up() = 0;
  // Where StepBatch::capture_rows go: [num_layers, rows, num_heads * head_dim] in the compute
  // dtype on the backend's device, owned by the caller and valid for every later step.
  virtual void set_query_store(const TensorView& store) = 0;

  // Runs the batch over the bound arena: writes its K/V and returns the f32 logits of the rows
  // named by batch.logits_indices, [num_logits, vocab] on the backend's device, valid until the
  // next execute().
  virtual TensorView execute(const StepBatch& batch) = 0;
  // Logits of more token rows of the last execute() (prompt logprobs): `rows` index its tokens;
  // `logits` is [rows.size(), vocab] on the backend's device.
  virtual void compute_logits(const std::vector<int32_t>& rows, const TensorView& logits) = 0;

  // Decode graphs captured (0 where steps run eagerly).
  virtual int num_graphs() const { return 0; }
};

}  // namespace sieve::models
