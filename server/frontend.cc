#include "server/frontend.h"

#include "spdlog/spdlog.h"

namespace sieve::server {

namespace {

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// vLLM's bucket bounds, so dashboards built for vLLM read Sieve's histograms as they are.
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kItlBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                         0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
const std::vector<double> kLatencyBuckets = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                             5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                             60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
const std::vector<double> kTokenBuckets = {1,   2,    5,    10,   20,    50,    100,   200,
                                           500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};

}  // namespace

const char* sieve_version() { return SIEVE_VERSION; }

std::string clean_request_id(std::string_view given) {
  std::string id(given.substr(0, kMaxRequestIdBytes));
  for (char& c : id) {
    if (c <= ' ' || c > '~') c = '_';
  }
  return id;
}

Frontend::Frontend(engine::Engine& engine, const ModelContext& model, int max_queue)
    : engine_(engine),
      model_(model),
      max_queue_(max_queue),
      registry_("model_name=\"" + escape_label_value(model.model_name()) + "\"") {
  const engine::EngineStats& s = engine.stats();
  auto gauge = [&](const char* name, const char* help, std::function<double()> read) {
    registry_.callback(name, help, "gauge", std::move(read));
  };
  auto counter = [&](const char* name, const char* help, std::function<double()> read) {
    registry_.callback(name, help, "counter", std::move(read));
  };
  gauge("sieve:num_requests_running", "Sequences in the engine's running batch.",
        [&s] { return s.num_running.load(); });
  gauge("sieve:num_requests_waiting", "Sequences waiting to be scheduled.",
        [&s] { return s.num_waiting.load(); });
  gauge("sieve:num_requests_in_flight", "Requests admitted by the server and not finished.",
        [this] { return num_in_flight(); });
  gauge("sieve:kv_cache_usage_perc", "Fraction of KV-cache pages in use (1 = full).", [&s] {
    const int total = s.kv_pages_total.load();
    return total > 0 ? static_cast<double>(s.kv_pages_used.load()) / total : 0.0;
  });
  gauge("sieve:kv_cache_pages_used", "KV-cache pages referenced by sequences.",
        [&s] { return s.kv_pages_used.load(); });
  gauge("sieve:kv_cache_pages_total", "KV-cache pages in the pool.",
        [&s] { return s.kv_pages_total.load(); });
  counter("sieve:num_preemptions_total", "Sequences preempted (recomputed later).",
          [&s] { return static_cast<double>(s.preemptions.load()); });
  counter("sieve:prompt_tokens_total", "Prompt tokens prefilled (cache hits excluded).",
          [&s] { return static_cast<double>(s.prompt_tokens.load()); });
  counter("sieve:generation_tokens_total", "Tokens generated.",
          [&s] { return static_cast<double>(s.generation_tokens.load()); });
  counter("sieve:engine_steps_total", "Engine steps run.",
          [&s] { return static_cast<double>(s.steps.load()); });
  requests_finished_ = &registry_.counter(
      "sieve:request_success_total", "Requests finished, by finish reason.", "finished_reason");
  requests_rejected_ = &registry_.counter("sieve:request_rejected_total",
                                          "Requests refused before the engine, by code.", "code");
  prefix_cache_queries_ = &registry_.counter("sieve:prefix_cache_queries_total",
                                             "Prompt tokens looked up in the prefix cache.");
  prefix_cache_hits_ = &registry_.counter("sieve:prefix_cache_hits_total",
                                          "Prompt tokens served from the prefix cache.");
  ttft_ = &registry_.histogram("sieve:time_to_first_token_seconds",
                               "Time from arrival to the first token.", kTtftBuckets);
  itl_ = &registry_.histogram("sieve:inter_token_latency_seconds",
                              "Time between consecutive tokens of a sample.", kItlBuckets);
  e2e_ = &registry_.histogram("sieve:e2e_request_latency_seconds",
                              "Time from arrival to the last output.", kLatencyBuckets);
  queue_ = &registry_.histogram("sieve:request_queue_time_seconds",
                                "Time from arrival to the request's first engine step.",
                                kLatencyBuckets);
  prompt_tokens_ = &registry_.histogram("sieve:request_prompt_tokens",
                                        "Prompt length of finished requests.", kTokenBuckets);
  generation_tokens_ = &registry_.histogram(
      "sieve:request_generation_tokens", "Tokens generated per finished request.", kTokenBuckets);
  const engine::CompressionStats& c = engine.compression_stats();
  counter("sieve:kv_compression_actions_total", "KV compactions applied by compression policies.",
          [&c] { return static_cast<double>(c.actions.load()); });
  counter("sieve:kv_evicted_tokens_total",
          "KV tokens evicted by compression policies (mean over layers and KV heads).",
          [&c] { return static_cast<double>(c.evicted_tokens.load()); });
  counter("sieve:kv_compression_skipped_total",
          "Compression actions due but not applied (no query ring free, pool short of pages).",
          [&c] { return static_cast<double>(c.skipped_actions.load()); });
  requests_by_method_ = &registry_.counter("sieve:requests_by_compression_method_total",
                                           "Requests admitted, by compression method.", "method");
  compression_seconds_ = &registry_.histogram(
      "sieve:kv_compression_seconds",
      "Time of one compression action: signals, decision and compaction of a sequence.",
      {0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0});
}

std::string Frontend::render_metrics() const {
  for (double seconds : engine_.take_compression_seconds()) compression_seconds_->observe(seconds);
  return registry_.render();
}

StatusOr<std::vector<std::unique_ptr<TrackedRequest>>> Frontend::submit(
    std::vector<engine::Request> requests, const std::string& log_id,
    std::chrono::steady_clock::time_point arrival) {
  if (shutting_down_) {
    count_rejected("unavailable");
    return absl::UnavailableError("the server is shutting down");
  }
  const int count = static_cast<int>(requests.size());
  const int pending = num_pending_.fetch_add(count) + count;
  if (max_queue_ > 0 && pending > max_queue_) {
    num_pending_ -= count;
    count_rejected("queue_full");
    return ResourceExhaustedError("the server's queue is full (--max-queue " +
                                  std::to_string(max_queue_) + "); retry later");
  }
  std::vector<std::unique_ptr<TrackedRequest>> tracked;
  for (size_t i = 0; i < requests.size(); ++i) {
    const int num_prompt_tokens = static_cast<int>(requests[i].prompt_token_ids.size());
    const std::string method = requests[i].compression ? requests[i].compression->method : "none";
    auto stream = engine_.add_request(std::move(requests[i]));
    if (!stream.ok()) {
      // Earlier prompts of the call are dropped (and so aborted) with `tracked`.
      num_pending_ -= count - static_cast<int>(i);
      count_rejected("invalid_argument");
      return stream.status();
    }
    requests_by_method_->add(1, method);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_flight_.insert((*stream)->id());
    }
    const std::string id = count == 1 ? log_id : log_id + "-" + std::to_string(i);
    tracked.push_back(std::unique_ptr<TrackedRequest>(
        new TrackedRequest(*this, std::move(*stream), id, arrival, num_prompt_tokens)));
  }
  return tracked;
}

void Frontend::count_rejected(const std::string& code) { requests_rejected_->add(1, code); }

int Frontend::num_in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(in_flight_.size());
}

void Frontend::abort_all() {
  std::vector<engine::RequestId> ids;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ids.assign(in_flight_.begin(), in_flight_.end());
  }
  for (engine::RequestId id : ids) engine_.abort(id);
}

void Frontend::release(engine::RequestId id) {
  std::lock_guard<std::mutex> lock(mutex_);
  in_flight_.erase(id);
}

TrackedRequest::TrackedRequest(Frontend& frontend, std::shared_ptr<engine::OutputStream> stream,
                               std::string log_id, Clock::time_point arrival, int num_prompt_tokens)
    : frontend_(frontend),
      stream_(std::move(stream)),
      log_id_(std::move(log_id)),
      arrival_(arrival),
      num_prompt_tokens_(num_prompt_tokens) {}

TrackedRequest::~TrackedRequest() {
  if (finished_) return;
  stream_->set_listener(nullptr);
  frontend_.engine_.abort(id());
  engine::Usage usage;
  usage.prompt_tokens = num_prompt_tokens_;
  usage.completion_tokens = num_generated_;
  record("abort", usage, Clock::time_point{});
}

void TrackedRequest::abort() {
  if (!finished_) frontend_.engine_.abort(id());
}

std::optional<engine::RequestOutput> TrackedRequest::next(std::chrono::milliseconds timeout) {
  if (finished_) return std::nullopt;
  std::optional<engine::RequestOutput> out = stream_->next(timeout);
  if (out) observe(*out);
  return out;
}

void TrackedRequest::observe(const engine::RequestOutput& out) {
  const Clock::time_point now = Clock::now();
  if (!out.token_ids.empty()) {
    if (!first_token_) {
      first_token_ = now;
      frontend_.ttft_->observe(seconds(now - arrival_));
    }
    const size_t index = static_cast<size_t>(out.index);
    if (last_token_.size() <= index) last_token_.resize(index + 1);
    if (last_token_[index] != Clock::time_point{}) {
      // Tokens that arrive together split the gap between them.
      const double gap = seconds(now - last_token_[index]) / out.token_ids.size();
      for (size_t t = 0; t < out.token_ids.size(); ++t) frontend_.itl_->observe(gap);
    }
    last_token_[index] = now;
    num_generated_ += static_cast<int>(out.token_ids.size());
  }
  if ((first_token_ || out.finished_request) && counted_pending_) {
    counted_pending_ = false;
    --frontend_.num_pending_;
  }
  if (out.finished_request) {
    finished_ = true;
    record(out.finish_reason.value_or("stop"), out.usage, out.first_scheduled_time);
  }
}

void TrackedRequest::record(const std::string& finish_reason, const engine::Usage& usage,
                            Clock::time_point first_scheduled) {
  if (counted_pending_) {
    counted_pending_ = false;
    --frontend_.num_pending_;
  }
  const Clock::time_point now = Clock::now();
  const double e2e_s = seconds(now - arrival_);
  Frontend& f = frontend_;
  f.requests_finished_->add(1, finish_reason);
  f.e2e_->observe(e2e_s);
  double queue_ms = -1.0;
  if (first_scheduled != Clock::time_point{}) {
    const double queue_s = std::max(0.0, seconds(first_scheduled - arrival_));
    f.queue_->observe(queue_s);
    queue_ms = queue_s * 1e3;
  }
  f.prompt_tokens_->observe(usage.prompt_tokens);
  f.generation_tokens_->observe(usage.completion_tokens);
  f.prefix_cache_queries_->add(usage.prompt_tokens);
  f.prefix_cache_hits_->add(usage.cached_prompt_tokens);
  f.release(id());
  const double ttft_ms = first_token_ ? seconds(*first_token_ - arrival_) * 1e3 : -1.0;
  const double tpot_ms = first_token_ && usage.completion_tokens > 1
                             ? seconds(now - *first_token_) * 1e3 / (usage.completion_tokens - 1)
                             : 0.0;
  spdlog::info(
      "request {}: {} prompt tokens ({} cached), {} generated, finish {}, queue {:.1f} ms, "
      "ttft {:.1f} ms, tpot {:.1f} ms, e2e {:.1f} ms",
      log_id_, usage.prompt_tokens, usage.cached_prompt_tokens, usage.completion_tokens,
      finish_reason, queue_ms, ttft_ms, tpot_ms, e2e_s * 1e3);
}

}  // namespace sieve::server
