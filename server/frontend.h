#pragma once
// What the HTTP and gRPC servers share between a parsed request and the engine: admission (the
// --max-queue limit, refusal while shutting down), per-request timing into the Prometheus
// metrics, one info log line per request, and aborting whatever is in flight at shutdown.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "engine/engine.h"
#include "server/metrics.h"
#include "server/model_context.h"

namespace sieve::server {

class Frontend;

// Most bytes of a client's request id kept (the rest is cut).
inline constexpr size_t kMaxRequestIdBytes = 128;

// A client's request id (X-Request-Id, GenerateRequest.request_id) made safe to log and echo:
// every byte outside printable ASCII, and the space, becomes '_' (so a newline cannot start a
// forged log line), and it is cut to kMaxRequestIdBytes. Empty when `given` is.
std::string clean_request_id(std::string_view given);

// One engine request as a server handler holds it. Times its outputs (TTFT, inter-token
// latency, end-to-end) and records it in the metrics and the log once it ends. Dropping it
// before its last output aborts the engine request (a client that went away), so a handler can
// never leak pages. Used by one consumer thread at a time.
class TrackedRequest {
 public:
  ~TrackedRequest();
  TrackedRequest(const TrackedRequest&) = delete;
  TrackedRequest& operator=(const TrackedRequest&) = delete;

  engine::RequestId id() const { return stream_->id(); }
  // The next output, waiting up to `timeout`; empty when none is ready.
  std::optional<engine::RequestOutput> next(std::chrono::milliseconds timeout);
  // Called from the engine thread after each output is queued (see OutputStream).
  void set_listener(std::function<void()> on_output) {
    stream_->set_listener(std::move(on_output));
  }
  // Asks the engine to stop the request; its last output (finish reason "abort") follows.
  void abort();
  // True once the request's last output has been returned by next().
  bool finished() const { return finished_; }

 private:
  friend class Frontend;
  using Clock = std::chrono::steady_clock;
  TrackedRequest(Frontend& frontend, std::shared_ptr<engine::OutputStream> stream,
                 std::string log_id, Clock::time_point arrival, int num_prompt_tokens);
  void observe(const engine::RequestOutput& out);
  // `first_scheduled` is the epoch when the engine never ran the request.
  void record(const std::string& finish_reason, const engine::Usage& usage,
              Clock::time_point first_scheduled);

  Frontend& frontend_;
  std::shared_ptr<engine::OutputStream> stream_;
  std::string log_id_;
  Clock::time_point arrival_;
  std::optional<Clock::time_point> first_token_;
  std::vector<Clock::time_point> last_token_;  // per sample index
  int num_prompt_tokens_ = 0;
  int num_generated_ = 0;
  bool counted_pending_ = true;  // still counted as waiting for its first token
  bool finished_ = false;
};

class Frontend {
 public:
  // `max_queue` bounds the requests admitted but still waiting for their first token (0 = no
  // bound). `engine` and `model` outlive the frontend.
  Frontend(engine::Engine& engine, const ModelContext& model, int max_queue);

  // Admits `requests` (the prompts of one API call) together and starts them. RESOURCE_EXHAUSTED
  // when they would push the queue past --max-queue; UNAVAILABLE while shutting down; the
  // engine's INVALID_ARGUMENT naming the field otherwise. `arrival` is when the call came in.
  StatusOr<std::vector<std::unique_ptr<TrackedRequest>>> submit(
      std::vector<engine::Request> requests, const std::string& log_id,
      std::chrono::steady_clock::time_point arrival);

  // Counts a request refused before it reached the engine (HTTP status or gRPC code name).
  void count_rejected(const std::string& code);

  // Refuses new requests from now on.
  void begin_shutdown() { shutting_down_ = true; }
  bool shutting_down() const { return shutting_down_; }
  int num_in_flight() const;
  // Aborts every request in flight (their streams end with finish reason "abort").
  void abort_all();

  engine::Engine& engine() { return engine_; }
  const ModelContext& model() const { return model_; }
  // The Prometheus text of all metrics.
  // The Prometheus text; first moves the engine's compression timings into their histogram.
  std::string render_metrics() const;

 private:
  friend class TrackedRequest;
  void release(engine::RequestId id);

  engine::Engine& engine_;
  const ModelContext& model_;
  const int max_queue_;
  std::atomic<bool> shutting_down_{false};
  std::atomic<int> num_pending_{0};  // admitted, no token yet

  mutable std::mutex mutex_;
  std::unordered_set<engine::RequestId> in_flight_;

  MetricsRegistry registry_;
  Counter* requests_finished_;
  Counter* requests_rejected_;
  Counter* requests_by_method_;
  Counter* prefix_cache_queries_;
  Counter* prefix_cache_hits_;
  Histogram* ttft_;
  Histogram* itl_;
  Histogram* e2e_;
  Histogram* queue_;
  Histogram* prompt_tokens_;
  Histogram* generation_tokens_;
  Histogram* compression_seconds_;
};

}  // namespace sieve::server
