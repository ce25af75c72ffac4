#include "engine/engine.h"

#include <algorithm>
#include <random>

#include "engine/kv_sizing.h"
#include "models/transformer_runner.h"
#include "spdlog/spdlog.h"

namespace sieve::engine {

using scheduler::SeqId;

Engine::Engine(std::unique_ptr<models::ModelRunner> owned_runner, models::ModelRunner& runner,
               kernels::Backend& backend, const models::Tokenizer* tokenizer,
               std::vector<int32_t> eos_token_ids, const EngineConfig& config)
    : owned_runner_(std::move(owned_runner)),
      runner_(runner),
      backend_(backend),
      config_(config),
      tokenizer_(tokenizer),
      output_(tokenizer, std::move(eos_token_ids)) {}

Engine::~Engine() { stop(); }

StatusOr<std::unique_ptr<Engine>> Engine::create(models::ModelRunner& runner,
                                                 kernels::Backend& backend,
                                                 const models::Tokenizer* tokenizer,
                                                 std::vector<int32_t> eos_token_ids,
                                                 const EngineConfig& config) {
  std::unique_ptr<Engine> engine(
      new Engine(nullptr, runner, backend, tokenizer, std::move(eos_token_ids), config));
  RETURN_IF_ERROR(engine->init());
  return engine;
}

StatusOr<std::unique_ptr<Engine>> Engine::create(models::Transformer& model,
                                                 kernels::Backend& backend,
                                                 const models::Tokenizer* tokenizer,
                                                 std::vector<int32_t> eos_token_ids,
                                                 const EngineConfig& config) {
  ASSIGN_OR_RETURN(std::unique_ptr<models::TransformerRunner> runner,
                   models::TransformerRunner::create(model));
  models::ModelRunner& ref = *runner;
  std::unique_ptr<Engine> engine(
      new Engine(std::move(runner), ref, backend, tokenizer, std::move(eos_token_ids), config));
  RETURN_IF_ERROR(engine->init());
  return engine;
}

Status Engine::init() {
  const models::ModelConfig& c = runner_.config();
  const models::StepLimits& limits = runner_.limits();
  if (config_.max_num_batched_tokens > limits.max_num_tokens ||
      config_.max_num_seqs > limits.max_num_seqs) {
    return InvalidArgumentError(
        "max_num_batched_tokens " + std::to_string(config_.max_num_batched_tokens) +
        " / max_num_seqs " + std::to_string(config_.max_num_seqs) +
        " exceed the model runner's step limits " + std::to_string(limits.max_num_tokens) + " / " +
        std::to_string(limits.max_num_seqs));
  }
  if (config_.long_prefill_token_threshold < 0 || config_.max_num_partial_prefills < 1 ||
      config_.max_long_partial_prefills < 1 ||
      config_.max_long_partial_prefills > config_.max_num_partial_prefills) {
    return InvalidArgumentError(
        "long_prefill_token_threshold must be >= 0 and 1 <= max_long_partial_prefills <= "
        "max_num_partial_prefills; got " +
        std::to_string(config_.long_prefill_token_threshold) + ", " +
        std::to_string(config_.max_long_partial_prefills) + ", " +
        std::to_string(config_.max_num_partial_prefills));
  }
  const DType dtype = backend_.compute_dtype();
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return InvalidArgumentError("no KV format for the backend's compute dtype");
  }
  const kvcache::KvFormatId format =
      dtype == DType::kF32 ? kvcache::KvFormatId::kF32 : kvcache::KvFormatId::kBF16;
  max_model_len_ = config_.max_model_len > 0 ? std::min(config_.max_model_len, c.context_length())
                                             : c.context_length();
  const size_t page_bytes = kv_page_bytes(c, config_.page_tokens);
  ASSIGN_OR_RETURN(const int num_pages, kv_cache_pages(config_, page_bytes, backend_));
  kvcache::KvManagerConfig kv_config;
  kv_config.num_pages = num_pages;
  kv_config.page_bytes = page_bytes;
  kv_config.geometry = {c.num_layers, c.num_kv_heads, c.head_dim};
  kv_config.model_id = c.architecture_name;
  kv_config.enable_prefix_caching = config_.enable_prefix_caching;
  ASSIGN_OR_RETURN(kv_, kvcache::KvManager::create(kv_config));
  ASSIGN_OR_RETURN(const int tokens_per_page, kv_->tokens_per_page(format));
  // One arena of fixed-size pages; each sequence's format lays out its own pages in it.
  kernels::KvCacheLayout arena_layout;
  arena_layout.num_layers = c.num_layers;
  arena_layout.num_kv_heads = c.num_kv_heads;
  arena_layout.head_dim = c.head_dim;
  arena_layout.num_pages = num_pages;
  arena_layout.page_bytes = page_bytes / c.num_layers;
  layout_ = arena_layout.for_format(format);
  SIEVE_CHECK_EQ(layout_.tokens_per_page, tokens_per_page);
  // A sequence longer than the whole cache could never finish (it would fail after its work).
  // vLLM refuses to start then: so does an explicit max_model_len; the model's own context is
  // cut to what fits, and the caller (the server) says so loudly.
  const int64_t kv_tokens = static_cast<int64_t>(num_pages) * tokens_per_page;
  if (max_model_len_ > kv_tokens) {
    if (config_.max_model_len > 0) {
      return InvalidArgumentError("max_model_len " + std::to_string(max_model_len_) +
                                  " is larger than the " + std::to_string(kv_tokens) +
                                  " tokens the KV cache can hold (" + std::to_string(num_pages) +
                                  " pages): raise the KV cache size or lower max_model_len");
    }
    spdlog::info("max_model_len {} (the model's is {}): all the KV cache holds", kv_tokens,
                 max_model_len_);
    max_model_len_ = static_cast<int>(kv_tokens);
  }
  ASSIGN_OR_RETURN(arena_,
                   backend_.allocate(DType::kU8, {static_cast<int64_t>(layout_.arena_bytes())}));
  ASSIGN_OR_RETURN(compressor_,
                   Compressor::create(backend_, runner_, *kv_, arena_, layout_,
                                      std::min(config_.max_compressing_seqs, config_.max_num_seqs),
                                      tokenizer_ ? make_reconstruction_prompt(*tokenizer_)
                                                 : ReconstructionPrompt{}));
  ASSIGN_OR_RETURN(sampler_, StepSampler::create(backend_, runner_, config_.max_num_seqs));
  batch_builder_ = std::make_unique<BatchBuilder>(layout_);

  scheduler::SchedulerConfig sched;
  sched.max_num_batched_tokens = config_.max_num_batched_tokens;
  sched.max_num_seqs = config_.max_num_seqs;
  sched.max_model_len = max_model_len_;
  sched.long_prefill_token_threshold = config_.long_prefill_token_threshold;
  sched.max_num_partial_prefills = config_.max_num_partial_prefills;
  sched.max_long_partial_prefills = config_.max_long_partial_prefills;
  // Admission counts a compressed sequence by what it holds once compressed, so the pool takes
  // more of them without preempting them as they grow to their budget.
  sched.kv_tokens_to_hold = [this](const scheduler::Sequence& seq) {
    const int hold = compressor_->kv_tokens_to_hold(seq.seq_id);
    return std::min(hold, seq.num_prompt_tokens + seq.max_tokens);
  };
  scheduler_ = std::make_unique<scheduler::Scheduler>(sched, *kv_);
  stats_.kv_pages_total = num_pages;
  spdlog::info(
      "KV cache: {} pages of {} tokens: {} tokens fit ({:.2f} GiB; {:.1f} requests of "
      "{} tokens)",
      num_pages, tokens_per_page, kv_tokens, layout_.arena_bytes() / 1073741824.0,
      static_cast<double>(kv_tokens) / max_model_len_, max_model_len_);
  std::string per_format;
  for (const kvcache::KvFormat& f : kvcache::kKvFormats) {
    if (!backend_.supports_kv_format(f.id)) continue;
    const int64_t tokens = int64_t{num_pages} * layout_.for_format(f.id).tokens_per_page;
    per_format += fmt::format("{}{} {}", per_format.empty() ? "" : ", ", f.name, tokens);
  }
  spdlog::info("KV cache: tokens that fit per kv_format: {} (default {})", per_format,
               kvcache::kv_format(format).name);
  runner_.bind_kv_cache(arena_, layout_);
  RETURN_IF_ERROR(runner_.warm_up());
  return OkStatus();
}

StatusOr<std::shared_ptr<OutputStream>> Engine::add_request(Request request) {
  RETURN_IF_ERROR(check_request(request, input_limits()));
  std::shared_ptr<OutputStream> stream;
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    stream = std::make_shared<OutputStream>(next_request_id_++);
    inbox_.emplace_back(std::move(request), stream);
  }
  notify_loop();
  return stream;
}

void Engine::abort(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    aborts_.push_back(id);
  }
  notify_loop();
}

// The loop checks has_work() under wake_mutex_ before it sleeps: taking the mutex here means the
// notification cannot fall between that check and the wait (a lost wake-up costs a 50 ms nap).
void Engine::notify_loop() {
  { std::lock_guard<std::mutex> lock(wake_mutex_); }
  wake_.notify_one();
}

bool Engine::has_work() const {
  std::lock_guard<std::mutex> lock(inbox_mutex_);
  return !inbox_.empty() || !aborts_.empty() || scheduler_->has_unfinished();
}

void Engine::drain_inbox() {
  std::vector<std::pair<Request, std::shared_ptr<OutputStream>>> inbox;
  std::vector<RequestId> aborts;
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    inbox.swap(inbox_);
    aborts.swap(aborts_);
  }
  for (auto& [request, stream] : inbox) {
    const RequestId id = stream->id();
    scheduler::RequestSpec spec;
    spec.request_id = id;
    spec.prompt_token_ids = request.prompt_token_ids;
    spec.max_tokens = request.params.max_tokens;
    spec.n = request.params.n;
    // Prompt logprobs need every prompt position computed, none served from the cache; so do
    // policies that score with the prompt's last queries.
    const std::shared_ptr<const kvcache::CompressionSpec> compression =
        request.compression && request.compression->compresses() ? request.compression : nullptr;
    const bool needs_queries =
        compression && compression->policy->needs(*compression->params).reads_prompt_queries();
    spec.use_prefix_cache = request.params.prompt_logprobs < 0 && !needs_queries;
    spec.kv_format = layout_.kv_format();
    if (request.compression && !request.compression->kv_format.empty()) {
      const StatusOr<kvcache::KvFormatId> format =
          kvcache::parse_kv_format(request.compression->kv_format);
      if (!format.ok() || !backend_.supports_kv_format(*format)) {
        OutputProcessor::reject(
            request, *stream,
            format.ok()
                ? InvalidArgumentError("compression.kv_format: " + request.compression->kv_format +
                                       " is not supported by the " + backend_.name() + " backend")
                : format.status());
        continue;
      }
      spec.kv_format = *format;
    }
    const uint64_t seed = request.params.seed ? *request.params.seed : std::random_device{}();
    auto added = scheduler_->add_request(std::move(spec));
    if (!added.ok()) {
      OutputProcessor::reject(request, *stream, added.status());
      continue;
    }
    const int prompt_tokens = static_cast<int>(request.prompt_token_ids.size());
    const int system_prompt_tokens = request.system_prompt_tokens;
    output_.add_request(id, std::move(request), stream, seed);
    if (compression) compressor_->add(*added, compression, prompt_tokens, system_prompt_tokens);
  }
  for (RequestId id : aborts) scheduler_->abort_request(id);
}

bool Engine::step() {
  timer_.restart();
  kv_->clear_released();  // finish_seq took those of last step's finished sequences
  drain_inbox();
  const scheduler::SchedulerOutput& out = scheduler_->schedule();
  timer_.mark(StepPhase::kSchedule);
  for (const scheduler::FinishedSeq& f : out.finished) finish_seq(f);
  stats_.preemptions += static_cast<int64_t>(out.preempted.size());
  for (SeqId id : out.preempted) compressor_->reset(id);
  for (const scheduler::Fork& f : out.forks) compressor_->fork(f.parent, f.child);
  if (out.empty()) {
    update_gauges();
    return !out.finished.empty();
  }
  execute(out);
  update(out);
  compressor_->act(out, *scheduler_);
  timer_.mark(StepPhase::kCompress);
  timer_.mark(StepPhase::kDetokenize);
  update_gauges();
  ++stats_.steps;
  return true;
}

void Engine::execute(const scheduler::SchedulerOutput& out) {
  step_start_ = std::chrono::steady_clock::now();
  copy_pages(backend_, arena_, layout_, out.page_copies);
  models::StepBatch& batch = batch_builder_->build(out, *scheduler_, *kv_);
  compressor_->plan_captures(out, *scheduler_, batch);
  timer_.mark(StepPhase::kSchedule);
  if (batch.num_tokens() > 0) step_logits_ = runner_.execute(batch);
  timer_.mark(StepPhase::kModel);
}

void Engine::update(const scheduler::SchedulerOutput& out) {
  for (const scheduler::ScheduledSeq& s : out.scheduled) {
    if (s.is_prefill_chunk) {
      output_.note_prefill_chunk(s, step_start_);
      stats_.prompt_tokens += s.num_new_tokens;
    }
  }
  sampler_->prompt_logprobs(out, batch_builder_->batch(), output_);
  sampler_->sample(out, batch_builder_->logits_rows(), step_logits_, *scheduler_, output_);
  const std::span<const StepSampler::Draw> draws = sampler_->draws();
  sampled_.resize(draws.size());
  if (!draws.empty()) {
    timer_.mark(StepPhase::kSample);
    const std::span<const int32_t> tokens = sampler_->tokens();
    for (size_t d = 0; d < draws.size(); ++d) {
      const std::optional<TokenLogprob> logprob = sampler_->logprob(d);
      output_.process_token(*draws[d].state, draws[d].seq, tokens[d], logprob ? &*logprob : nullptr,
                            sampled_[d]);
    }
    stats_.generation_tokens += static_cast<int64_t>(draws.size());
    timer_.mark(StepPhase::kDetokenize);
  }
  const std::vector<scheduler::FinishedSeq> finished = scheduler_->update(sampled_);
  timer_.mark(StepPhase::kSchedule);
  for (const scheduler::FinishedSeq& f : finished) finish_seq(f);
}

void Engine::finish_seq(const scheduler::FinishedSeq& f) {
  compressor_->remove(f.seq_id);
  output_.finish(f, *kv_);
}

void Engine::update_gauges() {
  stats_.num_running = scheduler_->num_running();
  stats_.num_waiting = scheduler_->num_waiting();
  const kvcache::KvCacheUsage usage = kv_->usage();
  stats_.kv_pages_used = usage.num_used;
  stats_.peak_kv_pages = std::max(stats_.peak_kv_pages.load(), usage.num_used);
}

void Engine::start() {
  if (running_.exchange(true)) return;
  thread_ = std::thread([this] { loop(); });
}

void Engine::stop() {
  if (!running_.exchange(false)) return;
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Engine::loop() {
  while (running_) {
    if (!step()) {
      std::unique_lock<std::mutex> lock(wake_mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(50), [&] { return !running_ || has_work(); });
    }
  }
}

}  // namespace sieve::engine
