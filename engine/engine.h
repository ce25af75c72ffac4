#pragma once
// The engine: one loop thread that owns the scheduler, the KV accounting and the model runner.
// Server threads (and the CLI and benchmarks) reach it only through add_request / abort and the
// request's OutputStream. Each step: schedule, copy pages, run the model on the flat batch,
// sample, detokenize, check stops, stream, update the scheduler.

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "engine/compressor.h"
#include "engine/output_stream.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/step_timer.h"
#include "kernels/backend.h"
#include "kvcache/kv_manager.h"
#include "models/tokenizer/tokenizer.h"
#include "models/transformer.h"
#include "scheduler/scheduler.h"

namespace sieve::engine {

struct EngineConfig {
  int max_num_batched_tokens = 2048;
  int max_num_seqs = 256;
  int max_model_len = 0;        // 0 = the model's context length
  int num_kv_pages = 0;         // 0 = derived from kv_cache_bytes
  // 0 = on a GPU, gpu_memory_utilization of its memory less what weights and activations use
  // (vLLM's split); elsewhere 1 GiB.
  size_t kv_cache_bytes = 0;
  double gpu_memory_utilization = 0.9;
  int page_tokens = 16;         // tokens of a bf16 page; a page's bytes are fixed by this
  bool enable_prefix_caching = true;
  // Sequences that may gather queries for their compression policy at once (each holds
  // kMaxQueryWindow rows of every layer's queries while it does; 0: no query-scored policy acts).
  int max_compressing_seqs = 32;
  // Prefill fairness (scheduler::SchedulerConfig): 0 = max_num_batched_tokens / 2.
  int long_prefill_token_threshold = 0;
  int max_num_partial_prefills = 4;
  int max_long_partial_prefills = 1;
};

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
  // `model`, `backend` and `tokenizer` (may be null: no text output) outlive the engine.
  static StatusOr<std::unique_ptr<Engine>> create(models::Transformer& model,
                                                  kernels::Backend& backend,
                                                  const models::Tokenizer* tokenizer,
                                                  std::vector<int32_t> eos_token_ids,
                                                  const EngineConfig& config);
  ~Engine();

  // Validates the request (every bad field is INVALID_ARGUMENT naming it) and queues it.
  // Thread-safe.
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
  const models::ModelConfig& model_config() const { return model_.config(); }
  int max_model_len() const { return max_model_len_; }
  const CompressionStats& compression_stats() const { return compressor_->stats(); }
  // See Compressor::set_observer; set before requests arrive.
  void set_compression_observer(Compressor::Observer observer) {
    compressor_->set_observer(std::move(observer));
  }
  // Durations of the compression actions since the last call (thread-safe).
  std::vector<double> take_compression_seconds() { return compressor_->take_action_seconds(); }

 private:
  struct SeqState;
  struct RequestState;

  Engine(models::Transformer& model, kernels::Backend& backend,
         const models::Tokenizer* tokenizer, std::vector<int32_t> eos_token_ids,
         const EngineConfig& config);
  Status init();
  void drain_inbox();
  void run_step(const scheduler::SchedulerOutput& out);
  void build_batch(const scheduler::SchedulerOutput& out);
  struct Draw;
  // Samples every draw of the step; the outputs stay valid until the next step.
  const std::vector<scheduler::SeqOutput>& sample_step(const scheduler::SchedulerOutput& out);
  // Who draws this step, and from which logits row: the scheduled sequences that sample (their
  // rows, in order), then forks, which draw from their parent's row. Returns the number of the
  // former; fills draws_ and sampling_.
  int64_t collect_draws(const scheduler::SchedulerOutput& out);
  // Penalties and sampling of every draw: forks first, then the scheduled rows.
  void draw_tokens(int64_t num_rows);
  // Penalties and sampling of draws [begin, end), whose raw logits are `rows`.
  void sample_rows(const TensorView& rows, int64_t begin, int64_t end);
  // One drawn token into its sequence: logprobs, stop conditions, counts, and the stream.
  void record_token(const Draw& draw, int32_t token, scheduler::SeqOutput& out);
  void prompt_logprobs_step(const scheduler::SchedulerOutput& out);
  void emit(SeqState& st, const scheduler::SeqOutput& sampled, const TokenLogprob* logprob);
  void finish_seq(const scheduler::FinishedSeq& finished);
  SeqState& seq_state(scheduler::SeqId id, RequestId request, int index);
  void update_gauges();
  void loop();
  void notify_loop();

  models::Transformer& model_;
  kernels::Backend& backend_;
  const models::Tokenizer* tokenizer_;
  std::vector<int32_t> eos_token_ids_;
  EngineConfig config_;
  int max_model_len_ = 0;

  std::unique_ptr<kvcache::KvManager> kv_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  std::unique_ptr<Compressor> compressor_;
  kernels::KvCacheLayout layout_;
  Tensor arena_;
  TensorView step_logits_;  // the last forward()'s logits rows (the model's memory)
  // Prompt logprobs go through the LM head in slices of this many rows.
  static constexpr int kPromptLogitRows = 64;
  Tensor prompt_logits_;
  // Forks draw from their parent's logits row: a copy of it each, this many at a time.
  static constexpr int kForkRows = 32;
  Tensor fork_logits_;
  // Host copies of the raw logits rows that logprobs are computed from.
  Tensor host_logits_, host_prompt_logits_;
  const float* logits_on_host(const TensorView& device, Tensor& host, int64_t rows);
  StatusOr<size_t> kv_cache_bytes() const;

  // Engine-thread state.
  std::unordered_map<RequestId, std::unique_ptr<RequestState>> requests_;
  std::unordered_map<scheduler::SeqId, std::unique_ptr<SeqState>> seqs_;
  models::StepBatch batch_;
  std::vector<int> logits_row_of_scheduled_;  // row of each scheduled seq that samples, or -1
  // Step scratch, reused so that a warm step allocates nothing.
  std::vector<kvcache::BatchSeq> batch_tables_;
  kvcache::BatchPageTables page_tables_;
  struct Draw {
    SeqState* state = nullptr;
    scheduler::SeqId seq = 0;
    int row = 0;        // its logits row (a fork's is its parent's)
    int host_row = -1;  // its raw row in host_logits_, for logprobs
  };
  std::vector<Draw> draws_;
  SamplingBatch sampling_;
  int num_host_rows_ = 0;
  std::vector<scheduler::SeqOutput> sampled_;
  std::vector<std::pair<int, int>> prompt_logit_rows_;  // (scheduled index, first row)

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
