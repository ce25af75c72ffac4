#pragma once
// The step's logits into tokens. Prompt logprobs first (more LM-head rows of the same forward,
// 64 at a time). Then who draws and from which logits row: the scheduled sequences that sample
// (their rows, in order), then forks of parallel sampling, which draw from copies of their
// parent's row. Penalties (Backend::apply_penalties, from each sample's PenaltyTokens) and
// sampling (Backend::sample) run on the device; the raw rows that logprobs are computed from go
// to the host first, before the penalties. One thread (the engine's) owns it.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "engine/output_processor.h"
#include "engine/sampler.h"
#include "kernels/backend.h"
#include "models/model_runner.h"
#include "scheduler/scheduler.h"

namespace sieve::engine {

class StepSampler {
 public:
  // Buffers for up to `max_num_seqs` draws a step of `runner`'s vocabulary.
  static StatusOr<std::unique_ptr<StepSampler>> create(kernels::Backend& backend,
                                                       models::ModelRunner& runner,
                                                       int max_num_seqs);

  // One draw: a sample and the logits row it draws from.
  struct Draw {
    SeqState* state = nullptr;
    scheduler::SeqId seq = 0;
    int row = 0;        // its logits row (a fork's is its parent's)
    int host_row = -1;  // its raw row in host_logits_, for logprobs
  };

  // The prompt logprobs of this step's prefill chunks that ask for them (batch: the step's
  // batch; the runner ran it last), into their requests' states.
  void prompt_logprobs(const scheduler::SchedulerOutput& out, const models::StepBatch& batch,
                       OutputProcessor& output);
  // Draws every token of the step from `step_logits` (the runner's rows; logits_rows gives each
  // scheduled sequence's, -1 when it does not sample); draws() and tokens() hold them until the
  // next call.
  void sample(const scheduler::SchedulerOutput& out, const std::vector<int>& logits_rows,
              const TensorView& step_logits, const scheduler::Scheduler& scheduler,
              OutputProcessor& output);
  std::span<const Draw> draws() const { return draws_; }
  std::span<const int32_t> tokens() const { return sampling_.tokens(); }
  // Draw d's logprob (from its raw row), when its request asks for logprobs.
  std::optional<TokenLogprob> logprob(size_t d) const;

 private:
  StepSampler(kernels::Backend& backend, models::ModelRunner& runner);
  // Who draws this step; returns the number of the scheduled rows (forks follow them).
  int64_t collect_draws(const scheduler::SchedulerOutput& out, const std::vector<int>& logits_rows,
                        const scheduler::Scheduler& scheduler, OutputProcessor& output);
  // Penalties and sampling of draws [begin, end), whose raw logits are `rows`.
  void sample_rows(const TensorView& rows, int64_t begin, int64_t end);
  const float* logits_on_host(const TensorView& device, Tensor& host, int64_t rows);

  kernels::Backend& backend_;
  models::ModelRunner& runner_;
  int64_t vocab_ = 0;
  // Prompt logprobs go through the LM head in slices of this many rows.
  static constexpr int kPromptLogitRows = 64;
  Tensor prompt_logits_;
  // Forks draw from their parent's logits row: a copy of it each, this many at a time.
  static constexpr int kForkRows = 32;
  Tensor fork_logits_;
  // Host copies of the raw logits rows that logprobs are computed from (where the backend's
  // memory is not the host's).
  Tensor host_logits_, host_prompt_logits_;
  // Step scratch, reused so that a warm step allocates nothing.
  std::vector<Draw> draws_;
  SamplingBatch sampling_;
  int num_host_rows_ = 0;
};

}  // namespace sieve::engine
