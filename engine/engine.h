#pragma once
// The engine: one loop thread that owns the scheduler, the KV accounting and the model runner.
// Server threads (and the CLI and benchmarks) reach it only through add_request / abort and the
// request's OutputStream. A step is vLLM v1's loop: schedule, execute (the model runner on the
// flat batch), update (sample, process outputs, update the scheduler), then apply the KV
// compression policies. Each stage lives in its own file:
//   input_processor.h   every check a request gets, once;
//   batch_builder.h     the scheduler's decisions as the runner's StepBatch;
//   models/model_runner.h  what runs a step (TransformerRunner, or a test's fake);
//   step_sampler.h      prompt logprobs, penalties and sampling;
//   output_processor.h  stop conditions, detokenizing and streaming, request state;
//   compressor.h        per-request KV compression;
//   kv_sizing.h         how many KV pages the engine gets.

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/status.h"
#include "engine/batch_builder.h"
#include "engine/compressor.h"
#include "engine/engine_config.h"
#include "engine/input_processor.h"
#include "engine/output_processor.h"
#include "engine/output_stream.h"
#include "engine/request.h"
#include "engine/step_sampler.h"
#include "engine/step_timer.h"
#include "kernels/backend.h"
#include "kvcache/kv_manager.h"
#include "models/model_runner.h"
#include "models/tokenizer/tokenizer.h"
#include "models/transformer.h"
#include "scheduler/scheduler.h"

namespace sieve::engine {

// Counters and gauges for metrics and benchmarks (read from any thread).
struct EngineStats {
  std::atomic<int64_t> steps{0};
  std::atomic<int64_t> prompt_tokens{0};
  std::atomic<int64_t> generation_tokens{0};
  std::atomic<int64_t> preemptions{0};
  std::atomic<int> num_running{0};
  std::atomic<int> num_waiting{0};
  std::atomic<int> kv_pages_used{0};
  std::atomic<int> kv_pages_total{0};
  std::atomic<int> peak_kv_pages{0};
};

class Engine {
 public:
  // `runner`, `backend` and `tokenizer` (may be null: no text output) outlive the engine.
  static StatusOr<std::unique_ptr<Engine>> create(models::ModelRunner& runner,
                                                  kernels::Backend& backend,
                                                  const models::Tokenizer* tokenizer,
                                                  std::vector<int32_t> eos_token_ids,
                                                  const EngineConfig& config);
  // The same over a TransformerRunner of `model` that the engine owns.
  static StatusOr<std::unique_ptr<Engine>> create(models::Transformer& model,
                                                  kernels::Backend& backend,
                                                  const models::Tokenizer* tokenizer,
                                                  std::vector<int32_t> eos_token_ids,
                                                  const EngineConfig& config);
  ~Engine();

  // Checks the request (check_request against input_limits(): every bad field is
  // INVALID_ARGUMENT naming it) and queues it. Thread-safe.
  StatusOr<std::shared_ptr<OutputStream>> add_request(Request request);
  // Aborts a request; its pages are freed in the next step. Thread-safe.
  void abort(RequestId id);

  // Runs the loop on its own thread until stop().
  void start();
  void stop();
  // One step on the calling thread (for synchronous drivers); false when there was nothing to do.
  bool step();
  bool has_work() const;

  const EngineStats& stats() const { return stats_; }
  const StepTimer& timer() const { return timer_; }
  const models::ModelConfig& model_config() const { return runner_.config(); }
  const models::ModelRunner& runner() const { return runner_; }
  int max_model_len() const { return max_model_len_; }
  // What add_request checks requests against (the servers check with it while parsing).
  InputLimits input_limits() const {
    return {runner_.config().vocab_size, max_model_len_, config_.max_num_seqs};
  }
  const CompressionStats& compression_stats() const { return compressor_->stats(); }
  // See Compressor::set_observer; set before requests arrive.
  void set_compression_observer(Compressor::Observer observer) {
    compressor_->set_observer(std::move(observer));
  }
  // KVzip's reconstruction prompt where the engine has no tokenizer to build it from (tests with
  // fixture models); set before requests arrive.
  void set_reconstruction_prompt(ReconstructionPrompt prompt) {
    compressor_->set_reconstruction_prompt(std::move(prompt));
  }
  // Durations of the compression actions since the last call (thread-safe).
  std::vector<double> take_compression_seconds() { return compressor_->take_action_seconds(); }

 private:
  Engine(std::unique_ptr<models::ModelRunner> owned_runner, models::ModelRunner& runner,
         kernels::Backend& backend, const models::Tokenizer* tokenizer,
         std::vector<int32_t> eos_token_ids, const EngineConfig& config);
  Status init();
  void drain_inbox();
  // The runner on the scheduled batch: page copies, the batch, query captures, the forward.
  void execute(const scheduler::SchedulerOutput& out);
  // The step's outputs: prompt logprobs, draws, output processing, the scheduler's update.
  void update(const scheduler::SchedulerOutput& out);
  void finish_seq(const scheduler::FinishedSeq& finished);
  void update_gauges();
  void loop();
  void notify_loop();

  std::unique_ptr<models::ModelRunner> owned_runner_;  // null when the caller owns it
  models::ModelRunner& runner_;
  kernels::Backend& backend_;
  EngineConfig config_;
  const models::Tokenizer* tokenizer_ = nullptr;  // may be null
  int max_model_len_ = 0;

  std::unique_ptr<kvcache::KvManager> kv_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  std::unique_ptr<Compressor> compressor_;
  std::unique_ptr<BatchBuilder> batch_builder_;
  std::unique_ptr<StepSampler> sampler_;
  OutputProcessor output_;
  kernels::KvCacheLayout layout_;
  Tensor arena_;

  // Engine-thread state.
  TensorView step_logits_;  // the last execute()'s logits rows (the runner's memory)
  std::chrono::steady_clock::time_point step_start_;
  std::vector<scheduler::SeqOutput> sampled_;  // reused step after step

  // Inbox from other threads.
  mutable std::mutex inbox_mutex_;
  std::vector<std::pair<Request, std::shared_ptr<OutputStream>>> inbox_;
  std::vector<RequestId> aborts_;
  RequestId next_request_id_ = 1;

  std::atomic<bool> running_{false};
  std::thread thread_;
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  EngineStats stats_;
  StepTimer timer_;
};

}  // namespace sieve::engine
