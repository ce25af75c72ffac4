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
#include "engine/output_stream.h"
#include "engine/request.h"
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
  size_t kv_cache_bytes = 1ull << 30;
  int page_tokens = 16;         // tokens of a bf16 page; a page's bytes are fixed by this
  bool enable_prefix_caching = true;
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
  std::vector<scheduler::SeqOutput> sample_step(const scheduler::SchedulerOutput& out);
  void prompt_logprobs_step(const scheduler::SchedulerOutput& out);
  void emit(const scheduler::SeqOutput& sampled, const TokenLogprob* logprob);
  void finish_seq(const scheduler::FinishedSeq& finished);
  SeqState& seq_state(scheduler::SeqId id, RequestId request, int index);
  void update_gauges();
  void loop();

  models::Transformer& model_;
  kernels::Backend& backend_;
  const models::Tokenizer* tokenizer_;
  std::vector<int32_t> eos_token_ids_;
  EngineConfig config_;
  int max_model_len_ = 0;

  std::unique_ptr<kvcache::KvManager> kv_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  kernels::KvCacheLayout layout_;
  Tensor arena_;
  Tensor logits_;
  // Prompt logprobs go through the LM head in slices of this many rows.
  static constexpr int kPromptLogitRows = 64;
  Tensor prompt_logits_;
  // Host copies of logits rows when the backend's memory is not the host's (penalties and
  // logprobs are computed on the host for now).
  Tensor host_logits_, host_prompt_logits_;
  const float* logits_on_host(const Tensor& device, Tensor& host, int64_t rows);

  // Engine-thread state.
  std::unordered_map<RequestId, std::unique_ptr<RequestState>> requests_;
  std::unordered_map<scheduler::SeqId, std::unique_ptr<SeqState>> seqs_;
  models::StepBatch batch_;
  std::vector<int> logits_row_of_scheduled_;  // row of each scheduled seq that samples, or -1
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
