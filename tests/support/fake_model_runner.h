#pragma once
// A model runner with no model, for engine tests that need no weights: the logits of a row are
// scripted from the token at that row and its position. The default script makes token
// (token + 1) % vocab the clear argmax, so greedy output is known in advance. It runs on the CPU
// backend (the engine samples its logits there), writes no K/V, and records every batch it ran.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "models/model_runner.h"

namespace sieve::test_support {

class FakeModelRunner final : public models::ModelRunner {
 public:
  // Fills `logits` (vocab entries) for a row whose input token is `token` at `position`.
  using Script = std::function<void(int32_t token, int32_t position, std::span<float> logits)>;

  // The default script: 0 everywhere, 10 at (token + 1) % vocab.
  static void next_token_script(int32_t token, int32_t, std::span<float> logits) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    logits[(token + 1) % static_cast<int32_t>(logits.size())] = 10.0f;
  }

  FakeModelRunner(int vocab_size, const models::StepLimits& limits, int context_length = 1024,
                  Script script = next_token_script)
      : limits_(limits), script_(std::move(script)) {
    config_.architecture_name = "FakeForCausalLM";
    config_.vocab_size = vocab_size;
    config_.hidden_size = 8;
    config_.intermediate_size = 8;
    config_.num_layers = 1;
    config_.num_heads = 1;
    config_.num_kv_heads = 1;
    config_.head_dim = 8;
    config_.max_position_embeddings = context_length;
    logits_ = Tensor::empty(DType::kF32, {limits.max_num_tokens, vocab_size});
  }

  const models::ModelConfig& config() const override { return config_; }
  const models::StepLimits& limits() const override { return limits_; }
  void bind_kv_cache(const TensorView&, const kernels::KvCacheLayout&) override {}
  Status warm_up() override { return OkStatus(); }
  void set_query_store(const TensorView&) override {}

  TensorView execute(const models::StepBatch& batch) override {
    SIEVE_CHECK_LE(batch.num_tokens(), limits_.max_num_tokens);
    SIEVE_CHECK_LE(batch.num_seqs(), limits_.max_num_seqs);
    batches.push_back(batch);
    const std::vector<int32_t> rows = batch.logits_indices;
    fill(rows, logits_.view());
    return logits_.view().slice(0, 0, static_cast<int64_t>(rows.size()));
  }

  void compute_logits(const std::vector<int32_t>& rows, const TensorView& logits) override {
    fill(rows, logits);
  }

  // Every batch execute() ran, in order.
  std::vector<models::StepBatch> batches;

 private:
  void fill(const std::vector<int32_t>& rows, const TensorView& out) const {
    const models::StepBatch& b = batches.back();
    const int64_t vocab = config_.vocab_size;
    for (size_t i = 0; i < rows.size(); ++i) {
      const int32_t row = rows[i];
      SIEVE_CHECK(row >= 0 && row < b.num_tokens()) << "row " << row;
      script_(b.token_ids[row], b.positions[row],
              std::span<float>(out.data<float>() + static_cast<int64_t>(i) * vocab, vocab));
    }
  }

  models::ModelConfig config_;
  models::StepLimits limits_;
  Script script_;
  Tensor logits_;
};

}  // namespace sieve::test_support
