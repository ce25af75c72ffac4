#include "engine/engine.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "core/hash.h"
#include "engine/sampler.h"
#include "engine/stop_strings.h"
#include "spdlog/spdlog.h"

namespace sieve::engine {

using scheduler::FinishReason;
using scheduler::SeqId;

struct Engine::RequestState {
  RequestId id = 0;
  Request request;
  std::shared_ptr<OutputStream> stream;
  uint64_t seed = 0;
  Usage usage;
  bool counted_cache = false;
  std::chrono::steady_clock::time_point first_scheduled;  // the end of its queue time
  // Prompt logprobs: entries for prompt positions 1.., sent with the request's first chunk.
  std::vector<TokenLogprob> prompt_logprobs;
  bool prompt_logprobs_sent = false;
};

// Per-sample streaming state: the detokenizer, the stop-string filter, token counts.
struct Engine::SeqState {
  RequestState* request = nullptr;
  int index = 0;
  std::unique_ptr<models::IncrementalDetokenizer> detokenizer;
  StopStringFilter stops;
  std::optional<PenaltyTokens> penalty_tokens;  // with penalties only
  int num_output = 0;

  SeqState(RequestState* r, int i, std::unique_ptr<models::IncrementalDetokenizer> d)
      : request(r),
        index(i),
        detokenizer(std::move(d)),
        stops(r->request.params.stop, r->request.params.include_stop_str_in_output) {
    if (has_penalties(r->request.params)) {
      penalty_tokens.emplace(r->request.params, r->request.prompt_token_ids);
    }
  }
};

Engine::Engine(models::Transformer& model, kernels::Backend& backend,
               const models::Tokenizer* tokenizer, std::vector<int32_t> eos_token_ids,
               const EngineConfig& config)
    : model_(model),
      backend_(backend),
      tokenizer_(tokenizer),
      eos_token_ids_(std::move(eos_token_ids)),
      config_(config) {}

Engine::~Engine() { stop(); }

StatusOr<std::unique_ptr<Engine>> Engine::create(models::Transformer& model,
                                                 kernels::Backend& backend,
                                                 const models::Tokenizer* tokenizer,
                                                 std::vector<int32_t> eos_token_ids,
                                                 const EngineConfig& config) {
  std::unique_ptr<Engine> engine(
      new Engine(model, backend, tokenizer, std::move(eos_token_ids), config));
  RETURN_IF_ERROR(engine->init());
  return engine;
}

Status Engine::init() {
  const models::ModelConfig& c = model_.config();
  if (config_.max_num_batched_tokens > model_.limits().max_num_tokens ||
      config_.max_num_seqs > model_.limits().max_num_seqs) {
    return InvalidArgumentError(
        "max_num_batched_tokens " + std::to_string(config_.max_num_batched_tokens) +
        " / max_num_seqs " + std::to_string(config_.max_num_seqs) +
        " exceed the model runner's step limits " +
        std::to_string(model_.limits().max_num_tokens) + " / " +
        std::to_string(model_.limits().max_num_seqs));
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
  // A page holds `page_tokens` tokens in bf16; its byte size is fixed, formats decide the rest.
  const size_t bf16_token_bytes = 2ull * 2 * c.num_layers * c.num_kv_heads * c.head_dim;
  const size_t page_bytes = bf16_token_bytes * config_.page_tokens;
  int num_pages = config_.num_kv_pages;
  if (num_pages <= 0) {
    ASSIGN_OR_RETURN(const size_t bytes, kv_cache_bytes());
    num_pages = static_cast<int>(std::min<size_t>(bytes / page_bytes, INT32_MAX));
  }
  if (num_pages < 1) {
    return InvalidArgumentError("the KV cache holds no page: raise the KV cache size");
  }
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
      return InvalidArgumentError(
          "max_model_len " + std::to_string(max_model_len_) + " is larger than the " +
          std::to_string(kv_tokens) + " tokens the KV cache can hold (" +
          std::to_string(num_pages) + " pages): raise the KV cache size or lower max_model_len");
    }
    spdlog::info("max_model_len {} (the model's is {}): all the KV cache holds", kv_tokens,
                 max_model_len_);
    max_model_len_ = static_cast<int>(kv_tokens);
  }
  ASSIGN_OR_RETURN(arena_,
                   backend_.allocate(DType::kU8, {static_cast<int64_t>(layout_.arena_bytes())}));
  ASSIGN_OR_RETURN(compressor_, Compressor::create(backend_, model_, *kv_, arena_, layout_,
                                                   std::min(config_.max_compressing_seqs,
                                                            config_.max_num_seqs)));
  ASSIGN_OR_RETURN(prompt_logits_, backend_.allocate(DType::kF32, {kPromptLogitRows, c.vocab_size}));
  ASSIGN_OR_RETURN(fork_logits_, backend_.allocate(DType::kF32, {kForkRows, c.vocab_size}));
  host_logits_ = Tensor::empty(DType::kF32, {config_.max_num_seqs, c.vocab_size});
  if (backend_.kind() != kernels::BackendKind::kCpu) {
    host_prompt_logits_ = Tensor::empty(DType::kF32, {kPromptLogitRows, c.vocab_size});
  }

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
  RETURN_IF_ERROR(model_.warm_up(arena_, layout_));
  return OkStatus();
}

// vLLM's split of a GPU's memory: the weights and activations are already allocated; the KV
// cache takes gpu_memory_utilization of the device less what is in use, less a headroom for
// what comes later (decode graphs, cuBLAS workspaces, sampling scratch).
StatusOr<size_t> Engine::kv_cache_bytes() const {
  if (config_.kv_cache_bytes > 0) return config_.kv_cache_bytes;
  const auto memory = backend_.memory_info();
  if (!memory) return size_t{1} << 30;
  const double utilization = config_.gpu_memory_utilization;
  if (!(utilization > 0 && utilization <= 1)) {
    return InvalidArgumentError("gpu_memory_utilization must be in (0, 1], got " +
                                std::to_string(utilization));
  }
  constexpr size_t kHeadroom = size_t{512} << 20;
  const auto [free_bytes, total_bytes] = *memory;
  const size_t used = total_bytes - free_bytes;
  const size_t budget = static_cast<size_t>(utilization * static_cast<double>(total_bytes));
  const double gib = 1073741824.0;
  if (budget <= used + kHeadroom) {
    return ResourceExhaustedError(
        "no GPU memory left for the KV cache: gpu_memory_utilization " +
        std::to_string(utilization) + " of " + std::to_string(total_bytes / gib) +
        " GiB, of which weights and activations already use " + std::to_string(used / gib) +
        " GiB");
  }
  spdlog::info("GPU memory: {:.1f} GiB; weights and activations {:.1f} GiB; "
               "gpu_memory_utilization {:.2f} leaves {:.1f} GiB for the KV cache",
               total_bytes / gib, used / gib, utilization, (budget - used - kHeadroom) / gib);
  return budget - used - kHeadroom;
}

StatusOr<std::shared_ptr<OutputStream>> Engine::add_request(Request request) {
  const SamplingParams& p = request.params;
  RETURN_IF_ERROR(validate(p));
  const models::ModelConfig& c = model_.config();
  if (request.prompt_token_ids.empty()) return InvalidArgumentError("prompt is empty");
  for (size_t i = 0; i < request.prompt_token_ids.size(); ++i) {
    const int32_t id = request.prompt_token_ids[i];
    if (id < 0 || id >= c.vocab_size) {
      return InvalidArgumentError("prompt token id " + std::to_string(id) + " at position " +
                                  std::to_string(i) + " is outside the vocabulary [0, " +
                                  std::to_string(c.vocab_size) + ")");
    }
  }
  for (int32_t id : p.stop_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return InvalidArgumentError("stop_token_ids: " + std::to_string(id) +
                                  " is outside the vocabulary");
    }
  }
  const int prompt_len = static_cast<int>(request.prompt_token_ids.size());
  if (prompt_len >= max_model_len_) {
    return InvalidArgumentError("prompt of " + std::to_string(prompt_len) +
                                " tokens does not fit the model's context of " +
                                std::to_string(max_model_len_) + " tokens");
  }
  // Subtraction form: prompt_len < max_model_len_ here, so nothing overflows (max_tokens may be
  // INT32_MAX).
  if (p.max_tokens > max_model_len_ - prompt_len) {
    return InvalidArgumentError("max_tokens " + std::to_string(p.max_tokens) + " plus the " +
                                std::to_string(prompt_len) + "-token prompt exceed the model's " +
                                "context of " + std::to_string(max_model_len_) + " tokens");
  }
  if (p.n > config_.max_num_seqs) {
    return InvalidArgumentError("n " + std::to_string(p.n) + " exceeds max_num_seqs " +
                                std::to_string(config_.max_num_seqs));
  }
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
    auto state = std::make_unique<RequestState>();
    state->id = stream->id();
    state->seed = request.params.seed ? *request.params.seed : std::random_device{}();
    state->usage.prompt_tokens = static_cast<int>(request.prompt_token_ids.size());
    scheduler::RequestSpec spec;
    spec.request_id = state->id;
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
      if (format.ok() && backend_.supports_kv_format(*format)) {
        spec.kv_format = *format;
      } else {
        RequestOutput out;
        out.finish_reason = "error";
        out.error = format.ok() ? "compression.kv_format: " + request.compression->kv_format +
                                      " is not supported by the " + backend_.name() + " backend"
                                : std::string(format.status().message());
        out.finished_request = true;
        out.usage = state->usage;
        stream->push(std::move(out));
        continue;
      }
    }
    state->request = std::move(request);
    state->stream = stream;
    auto added = scheduler_->add_request(std::move(spec));
    if (!added.ok()) {
      RequestOutput out;
      out.finish_reason = "error";
      out.error = std::string(added.status().message());
      out.finished_request = true;
      out.usage = state->usage;
      stream->push(std::move(out));
      continue;
    }
    if (compression) {
      compressor_->add(*added, compression, static_cast<int>(state->request.prompt_token_ids.size()),
                       state->request.system_prompt_tokens);
    }
    requests_.emplace(state->id, std::move(state));
  }
  for (RequestId id : aborts) scheduler_->abort_request(id);
}

Engine::SeqState& Engine::seq_state(SeqId id, RequestId request, int index) {
  auto it = seqs_.find(id);
  if (it != seqs_.end()) return *it->second;
  RequestState* r = requests_.at(request).get();
  // The prompt's last ids are the detokenizer's context, so a first token's leading space
  // (SentencePiece "▁Paris") streams as HF decodes it within the whole sequence.
  const std::vector<int32_t>& prompt = r->request.prompt_token_ids;
  const size_t context = std::min<size_t>(prompt.size(), 4);
  auto detokenizer = tokenizer_ ? tokenizer_->make_detokenizer(
                                      r->request.params.skip_special_tokens,
                                      std::span<const int32_t>(prompt).last(context))
                                : nullptr;
  return *seqs_.emplace(id, std::make_unique<SeqState>(r, index, std::move(detokenizer)))
              .first->second;
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
  run_step(out);
  update_gauges();
  ++stats_.steps;
  return true;
}

void Engine::run_step(const scheduler::SchedulerOutput& out) {
  const auto step_start = std::chrono::steady_clock::now();
  copy_pages(backend_, arena_, layout_, out.page_copies);
  build_batch(out);
  compressor_->plan_captures(out, *scheduler_, batch_);
  timer_.mark(StepPhase::kSchedule);
  if (batch_.num_tokens() > 0) {
    step_logits_ = model_.forward(batch_, arena_, layout_);
  }
  timer_.mark(StepPhase::kModel);
  for (const scheduler::ScheduledSeq& s : out.scheduled) {
    if (s.is_prefill_chunk) {
      RequestState& r = *requests_.at(s.request_id);
      if (!r.counted_cache) r.first_scheduled = step_start;
      if (!r.counted_cache && s.num_computed_tokens > 0 && s.sample_index == 0) {
        r.usage.cached_prompt_tokens = std::min(s.num_computed_tokens, r.usage.prompt_tokens);
      }
      r.counted_cache = true;
      stats_.prompt_tokens += s.num_new_tokens;
    }
  }
  prompt_logprobs_step(out);
  const std::vector<scheduler::SeqOutput>& sampled = sample_step(out);
  const std::vector<scheduler::FinishedSeq> finished = scheduler_->update(sampled);
  timer_.mark(StepPhase::kSchedule);
  for (const scheduler::FinishedSeq& f : finished) finish_seq(f);
  compressor_->act(out, *scheduler_);
  timer_.mark(StepPhase::kCompress);
  timer_.mark(StepPhase::kDetokenize);
}

void Engine::build_batch(const scheduler::SchedulerOutput& out) {
  models::StepBatch& b = batch_;
  b.token_ids.clear();
  b.positions.clear();
  b.qo_indptr.assign(1, 0);
  b.logits_indices.clear();
  b.rope_lens.clear();
  b.kv_head_lens.clear();
  b.kv_gap_ends.clear();
  b.kv_formats.clear();
  b.capture_rows.clear();
  b.capture_slots.clear();
  logits_row_of_scheduled_.assign(out.scheduled.size(), -1);
  std::vector<kvcache::BatchSeq>& tables = batch_tables_;
  tables.clear();
  bool any_compacted = false;
  bool any_other_format = false;
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    const scheduler::ScheduledSeq& s = out.scheduled[i];
    const scheduler::Sequence* seq = scheduler_->find(s.seq_id);
    SIEVE_CHECK(seq != nullptr) << "scheduled sequence " << s.seq_id << " is gone";
    for (int j = 0; j < s.num_new_tokens; ++j) {
      b.token_ids.push_back(seq->token_ids[s.num_computed_tokens + j]);
      b.positions.push_back(s.num_computed_tokens + j);
    }
    b.qo_indptr.push_back(static_cast<int32_t>(b.token_ids.size()));
    b.rope_lens.push_back(seq->num_tokens());
    tables.push_back({&kv_->page_table(s.seq_id), s.num_new_tokens});
    b.kv_formats.push_back(static_cast<int32_t>(seq->kv_format));
    any_other_format = any_other_format || seq->kv_format != layout_.kv_format();
    any_compacted = any_compacted || !kv_->head_lengths(s.seq_id).prefix_lens.empty();
    if (s.sample) {
      logits_row_of_scheduled_[i] = static_cast<int>(b.logits_indices.size());
      b.logits_indices.push_back(b.qo_indptr.back() - 1);
    }
  }
  // A batch of the layout's format alone passes no formats (and stays graph-eligible).
  if (!any_other_format) b.kv_formats.clear();
  // Swapped, not moved: both sides keep their capacity for the next step.
  kvcache::BatchPageTables& pt = page_tables_;
  kvcache::build_batch_page_tables(tables, &pt);
  b.kv_indptr.swap(pt.kv_indptr);
  b.kv_indices.swap(pt.kv_indices);
  b.kv_lens.swap(pt.kv_lens);
  b.slot_mapping.swap(pt.slot_mapping);
  if (any_compacted) {
    const int per_seq = layout_.num_layers * layout_.num_kv_heads;
    for (size_t i = 0; i < out.scheduled.size(); ++i) {
      const kvcache::HeadLengths h = kv_->head_lengths(out.scheduled[i].seq_id);
      if (h.prefix_lens.empty()) {
        b.kv_head_lens.insert(b.kv_head_lens.end(), per_seq, b.kv_lens[i]);
        b.kv_gap_ends.push_back(b.kv_lens[i]);
      } else {
        b.kv_head_lens.insert(b.kv_head_lens.end(), h.prefix_lens.begin(), h.prefix_lens.end());
        b.kv_gap_ends.push_back(h.gap_end);
      }
    }
  }
}

const float* Engine::logits_on_host(const TensorView& device, Tensor& host, int64_t rows) {
  if (backend_.kind() == kernels::BackendKind::kCpu) return device.data<float>();
  backend_.copy(host.view().slice(0, 0, rows), device.slice(0, 0, rows));
  backend_.synchronize();
  return host.data<float>();
}

void Engine::prompt_logprobs_step(const scheduler::SchedulerOutput& out) {
  // (flat batch row, prompt token it predicts, request) for every prompt position asked for.
  struct Row {
    int32_t row;
    int32_t token;
    RequestState* request;
    size_t slot;  // its entry in request->prompt_logprobs
  };
  std::vector<Row> rows;
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    const scheduler::ScheduledSeq& s = out.scheduled[i];
    if (!s.is_prefill_chunk || s.sample_index != 0) continue;
    RequestState& r = *requests_.at(s.request_id);
    if (r.request.params.prompt_logprobs < 0) continue;
    const std::vector<int32_t>& prompt = r.request.prompt_token_ids;
    for (int j = 0; j < s.num_new_tokens; ++j) {
      const int position = s.num_computed_tokens + j;
      // Row `position` predicts prompt token position + 1; a recompute skips what was sent.
      const int next = position + 1;
      if (next >= static_cast<int>(prompt.size())) break;
      if (next != static_cast<int>(r.prompt_logprobs.size()) + 1) continue;
      rows.push_back({batch_.qo_indptr[i] + j, prompt[next], &r, r.prompt_logprobs.size()});
      r.prompt_logprobs.emplace_back();  // filled below
    }
  }
  const int64_t vocab = model_.config().vocab_size;
  for (size_t begin = 0; begin < rows.size(); begin += kPromptLogitRows) {
    const size_t end = std::min(rows.size(), begin + kPromptLogitRows);
    std::vector<int32_t> indices;
    for (size_t k = begin; k < end; ++k) indices.push_back(rows[k].row);
    model_.compute_logits(indices, prompt_logits_.view().slice(0, 0, end - begin));
    const float* host = logits_on_host(prompt_logits_, host_prompt_logits_, end - begin);
    for (size_t k = begin; k < end; ++k) {
      const Row& row = rows[k];
      const std::span<const float> logits(host + (k - begin) * vocab, vocab);
      row.request->prompt_logprobs[row.slot] =
          compute_logprob(logits, row.token, row.request->request.params.prompt_logprobs);
    }
  }
}

const std::vector<scheduler::SeqOutput>& Engine::sample_step(
    const scheduler::SchedulerOutput& out) {
  const int64_t num_rows = collect_draws(out);
  sampled_.resize(draws_.size());
  if (draws_.empty()) return sampled_;
  draw_tokens(num_rows);
  timer_.mark(StepPhase::kSample);
  const std::span<const int32_t> tokens = sampling_.tokens();
  for (size_t d = 0; d < draws_.size(); ++d) record_token(draws_[d], tokens[d], sampled_[d]);
  stats_.generation_tokens += static_cast<int64_t>(draws_.size());
  timer_.mark(StepPhase::kDetokenize);
  return sampled_;
}

int64_t Engine::collect_draws(const scheduler::SchedulerOutput& out) {
  draws_.clear();
  sampling_.clear();
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    const scheduler::ScheduledSeq& s = out.scheduled[i];
    if (!s.sample) continue;
    draws_.push_back({&seq_state(s.seq_id, s.request_id, s.sample_index), s.seq_id,
                      logits_row_of_scheduled_[i]});
  }
  const int64_t num_rows = static_cast<int64_t>(draws_.size());
  for (const scheduler::Fork& f : out.forks) {
    const auto parent = std::find_if(draws_.begin(), draws_.begin() + num_rows,
                                     [&](const Draw& d) { return d.seq == f.parent; });
    SIEVE_CHECK(parent != draws_.begin() + num_rows) << "fork of unsampled " << f.parent;
    const int row = parent->row;
    const scheduler::Sequence* child = scheduler_->find(f.child);
    SIEVE_CHECK(child != nullptr);
    draws_.push_back({&seq_state(f.child, child->request_id, f.sample_index), f.child, row});
  }
  for (const Draw& draw : draws_) {
    const SeqState& st = *draw.state;
    sampling_.add(st.request->request.params,
                  splitmix64(st.request->seed + static_cast<uint64_t>(st.index)), st.num_output,
                  st.penalty_tokens ? &*st.penalty_tokens : nullptr, eos_token_ids_);
  }
  return num_rows;
}

void Engine::draw_tokens(int64_t num_rows) {
  // Forks first: their copies of a parent's row are taken before the parent's own row is
  // penalized in place.
  num_host_rows_ = 0;
  const int64_t n = static_cast<int64_t>(draws_.size());
  for (int64_t begin = num_rows; begin < n; begin += kForkRows) {
    const int64_t end = std::min<int64_t>(n, begin + kForkRows);
    const TensorView rows = fork_logits_.view().slice(0, 0, end - begin);
    for (int64_t d = begin; d < end; ++d) {
      backend_.copy(rows.select(0, d - begin), step_logits_.select(0, draws_[d].row));
    }
    sample_rows(rows, begin, end);
  }
  sample_rows(step_logits_.slice(0, 0, num_rows), 0, num_rows);
}

void Engine::record_token(const Draw& draw, int32_t token, scheduler::SeqOutput& o) {
  SeqState& st = *draw.state;
  const SamplingParams& p = st.request->request.params;
  std::optional<TokenLogprob> logprob;
  // Logprobs come from the raw distribution (before penalties), as vLLM reports them.
  if (p.logprobs >= 0) {
    const int64_t vocab = model_.config().vocab_size;
    logprob = compute_logprob(
        std::span<const float>(host_logits_.data<float>() + draw.host_row * vocab, vocab), token,
        p.logprobs);
  }
  o.seq_id = draw.seq;
  o.token_ids.assign(1, token);
  o.finish = FinishReason::kNone;
  const bool is_eos =
      std::find(eos_token_ids_.begin(), eos_token_ids_.end(), token) != eos_token_ids_.end();
  const bool is_stop_token =
      std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end();
  if ((is_eos && !p.ignore_eos) || is_stop_token) o.finish = FinishReason::kStop;
  if (st.penalty_tokens) st.penalty_tokens->add_output(token);
  ++st.num_output;
  ++st.request->usage.completion_tokens;
  emit(st, o, logprob ? &*logprob : nullptr);
  if (st.stops.matched()) o.finish = FinishReason::kStop;
}

void Engine::sample_rows(const TensorView& rows, int64_t begin, int64_t end) {
  if (begin == end) return;
  // Rows that logprobs are computed from go to the host raw, before the penalties; runs of
  // consecutive draws in one copy each.
  for (int64_t d = begin; d < end;) {
    if (draws_[d].state->request->request.params.logprobs < 0) {
      ++d;
      continue;
    }
    int64_t run_end = d;
    while (run_end < end && draws_[run_end].state->request->request.params.logprobs >= 0) {
      draws_[run_end++].host_row = num_host_rows_++;
    }
    const int64_t first = draws_[d].host_row;
    backend_.copy(host_logits_.view().slice(0, first, first + run_end - d),
                  rows.slice(0, d - begin, run_end - begin));
    d = run_end;
  }
  if (sampling_.has_penalties(begin, end)) {
    backend_.apply_penalties(sampling_.penalty_args(rows, begin, end));
  }
  backend_.sample(sampling_.sample_args(rows, begin, end));
}

void Engine::emit(SeqState& st, const scheduler::SeqOutput& sampled, const TokenLogprob* logprob) {
  RequestOutput out;
  out.index = st.index;
  out.token_ids = sampled.token_ids;
  if (logprob) out.logprobs.push_back(*logprob);
  RequestState& r = *st.request;
  if (r.request.params.prompt_logprobs >= 0 && !r.prompt_logprobs_sent) {
    out.prompt_logprobs = std::move(r.prompt_logprobs);
    r.prompt_logprobs_sent = true;
  }
  // A stop token ends the text without its own text (it is special, or a stop the user named).
  if (st.detokenizer && sampled.finish == FinishReason::kNone) {
    out.text = st.stops.push(st.detokenizer->feed(sampled.token_ids[0]));
  }
  st.request->stream->push(std::move(out));
}

void Engine::finish_seq(const scheduler::FinishedSeq& f) {
  compressor_->remove(f.seq_id);
  auto request_it = requests_.find(f.request_id);
  if (request_it == requests_.end()) return;
  RequestState& r = *request_it->second;
  if (const std::optional<kvcache::ReleasedSeq> held = kv_->take_released(f.seq_id)) {
    r.usage.kv_tokens_kept += held->num_kept_tokens;
    r.usage.kv_bytes += static_cast<int64_t>(held->num_pages) * kv_->config().page_bytes;
  }
  RequestOutput out;
  out.index = f.sample_index;
  auto seq_it = seqs_.find(f.seq_id);
  if (seq_it != seqs_.end()) {
    SeqState& st = *seq_it->second;
    if (st.detokenizer && f.reason != FinishReason::kStop) {
      out.text = st.stops.push(st.detokenizer->finish());
      out.text += st.stops.flush();
    }
    seqs_.erase(seq_it);
  }
  out.finish_reason = std::string(scheduler::finish_reason_name(f.reason));
  out.error = f.message;
  if (f.last_of_request) {
    out.finished_request = true;
    out.usage = r.usage;
    out.first_scheduled_time = r.first_scheduled;
  }
  r.stream->push(std::move(out));
  if (f.last_of_request) requests_.erase(request_it);
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
