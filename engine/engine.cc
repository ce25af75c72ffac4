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
  std::unordered_map<int32_t, int> output_counts;
  int num_output = 0;

  SeqState(RequestState* r, int i, std::unique_ptr<models::IncrementalDetokenizer> d)
      : request(r),
        index(i),
        detokenizer(std::move(d)),
        stops(r->request.params.stop, r->request.params.include_stop_str_in_output) {}
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
  if (num_pages <= 0) num_pages = static_cast<int>(config_.kv_cache_bytes / page_bytes);
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
  layout_ = {c.num_layers, c.num_kv_heads, c.head_dim, tokens_per_page, num_pages, dtype};
  ASSIGN_OR_RETURN(arena_,
                   backend_.allocate(DType::kU8, {static_cast<int64_t>(layout_.arena_bytes())}));
  ASSIGN_OR_RETURN(logits_, backend_.allocate(DType::kF32, {config_.max_num_seqs, c.vocab_size}));
  ASSIGN_OR_RETURN(prompt_logits_, backend_.allocate(DType::kF32, {kPromptLogitRows, c.vocab_size}));
  if (backend_.kind() != kernels::BackendKind::kCpu) {
    host_logits_ = Tensor::empty(DType::kF32, {config_.max_num_seqs, c.vocab_size});
    host_prompt_logits_ = Tensor::empty(DType::kF32, {kPromptLogitRows, c.vocab_size});
  }

  scheduler::SchedulerConfig sched;
  sched.max_num_batched_tokens = config_.max_num_batched_tokens;
  sched.max_num_seqs = config_.max_num_seqs;
  sched.max_model_len = max_model_len_;
  scheduler_ = std::make_unique<scheduler::Scheduler>(sched, *kv_);
  stats_.kv_pages_total = num_pages;
  spdlog::info("KV cache: {} pages of {} tokens ({} tokens, {:.1f} MiB)", num_pages,
               tokens_per_page, static_cast<int64_t>(num_pages) * tokens_per_page,
               layout_.arena_bytes() / 1048576.0);
  return OkStatus();
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
  if (prompt_len + p.max_tokens > max_model_len_) {
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
  wake_.notify_one();
  return stream;
}

void Engine::abort(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    aborts_.push_back(id);
  }
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
    // Prompt logprobs need every prompt position computed, none served from the cache.
    spec.use_prefix_cache = request.params.prompt_logprobs < 0;
    spec.kv_format = layout_.dtype == DType::kF32 ? kvcache::KvFormatId::kF32
                                                  : kvcache::KvFormatId::kBF16;
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
  const scheduler::SchedulerOutput out = scheduler_->schedule();
  timer_.mark(StepPhase::kSchedule);
  for (const scheduler::FinishedSeq& f : out.finished) finish_seq(f);
  stats_.preemptions += static_cast<int64_t>(out.preempted.size());
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
  if (!out.page_copies.empty()) {
    std::vector<int32_t> src, dst;
    for (const kvcache::PageCopy& copy : out.page_copies) {
      src.push_back(copy.src);
      dst.push_back(copy.dst);
    }
    const int64_t n = static_cast<int64_t>(src.size());
    backend_.copy_pages({arena_, layout_, TensorView(src.data(), DType::kI32, {n}),
                         TensorView(dst.data(), DType::kI32, {n})});
  }
  build_batch(out);
  timer_.mark(StepPhase::kSchedule);
  const int64_t num_logits = static_cast<int64_t>(batch_.logits_indices.size());
  if (num_logits > 0 || batch_.num_tokens() > 0) {
    model_.forward(batch_, arena_, layout_, logits_.view().slice(0, 0, num_logits));
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
  const std::vector<scheduler::SeqOutput> sampled = sample_step(out);
  const std::vector<scheduler::FinishedSeq> finished = scheduler_->update(sampled);
  timer_.mark(StepPhase::kSchedule);
  for (const scheduler::FinishedSeq& f : finished) finish_seq(f);
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
  logits_row_of_scheduled_.assign(out.scheduled.size(), -1);
  std::vector<kvcache::BatchSeq> tables;
  bool any_compacted = false;
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
    any_compacted = any_compacted || !kv_->head_lengths(s.seq_id).prefix_lens.empty();
    if (s.sample) {
      logits_row_of_scheduled_[i] = static_cast<int>(b.logits_indices.size());
      b.logits_indices.push_back(b.qo_indptr.back() - 1);
    }
  }
  kvcache::BatchPageTables pt;
  kvcache::build_batch_page_tables(tables, &pt);
  b.kv_indptr = std::move(pt.kv_indptr);
  b.kv_indices = std::move(pt.kv_indices);
  b.kv_lens = std::move(pt.kv_lens);
  b.slot_mapping = std::move(pt.slot_mapping);
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

const float* Engine::logits_on_host(const Tensor& device, Tensor& host, int64_t rows) {
  if (backend_.kind() == kernels::BackendKind::kCpu) return device.data<float>();
  backend_.copy(host.view().slice(0, 0, rows), device.view().slice(0, 0, rows));
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

std::vector<scheduler::SeqOutput> Engine::sample_step(const scheduler::SchedulerOutput& out) {
  // Who samples, and from which logits row: scheduled sequences, then forks (parent's row).
  struct Draw {
    SeqId seq;
    RequestId request;
    int index;
    int row;
  };
  std::vector<Draw> draws;
  std::unordered_map<SeqId, int> row_of_seq;
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    const scheduler::ScheduledSeq& s = out.scheduled[i];
    if (!s.sample) continue;
    draws.push_back({s.seq_id, s.request_id, s.sample_index, logits_row_of_scheduled_[i]});
    row_of_seq[s.seq_id] = logits_row_of_scheduled_[i];
  }
  for (const scheduler::Fork& f : out.forks) {
    const scheduler::Sequence* child = scheduler_->find(f.child);
    SIEVE_CHECK(child != nullptr);
    draws.push_back({f.child, child->request_id, f.sample_index, row_of_seq.at(f.parent)});
  }
  if (draws.empty()) return {};
  const int64_t vocab = model_.config().vocab_size;
  const int64_t n = static_cast<int64_t>(draws.size());
  std::vector<float> temperature(n), top_p(n), min_p(n);
  std::vector<int32_t> top_k(n), tokens(n);
  std::vector<int64_t> seeds(n), steps(n);
  // Plain draws (no penalties, masks or logprobs, one row each in order) sample straight from
  // the logits on the device; anything else processes its rows on the host first.
  bool plain = true;
  for (int64_t d = 0; d < n; ++d) {
    const Draw& draw = draws[d];
    SeqState& st = seq_state(draw.seq, draw.request, draw.index);
    const SamplingParams& p = st.request->request.params;
    temperature[d] = p.temperature;
    top_k[d] = p.top_k;
    top_p[d] = p.top_p;
    min_p[d] = p.min_p;
    seeds[d] = static_cast<int64_t>(splitmix64(st.request->seed + static_cast<uint64_t>(draw.index)));
    steps[d] = st.num_output;
    plain = plain && draw.row == d && p.logprobs < 0 && p.repetition_penalty == 1.0f &&
            p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f &&
            st.num_output >= p.min_tokens;
  }
  const float* logits = nullptr;  // host logits, for the processed path and logprobs
  TensorView sample_rows = logits_.view().slice(0, 0, n);
  Tensor rows;
  if (!plain) {
    logits = logits_on_host(logits_, host_logits_,
                            static_cast<int64_t>(batch_.logits_indices.size()));
    rows = Tensor::empty(DType::kF32, {n, vocab});
    for (int64_t d = 0; d < n; ++d) {
      const Draw& draw = draws[d];
      SeqState& st = *seqs_.at(draw.seq);
      const SamplingParams& p = st.request->request.params;
      const scheduler::Sequence* seq = scheduler_->find(draw.seq);
      std::span<float> row(rows.data<float>() + d * vocab, vocab);
      std::memcpy(row.data(), logits + static_cast<int64_t>(draw.row) * vocab,
                  vocab * sizeof(float));
      apply_penalties(row, p,
                      std::span<const int32_t>(seq->token_ids).first(seq->num_prompt_tokens),
                      st.output_counts);
      if (st.num_output < p.min_tokens) {
        mask_tokens(row, p.stop_token_ids);
        if (!p.ignore_eos) mask_tokens(row, eos_token_ids_);
      }
    }
    sample_rows = rows;
  }
  backend_.sample({sample_rows, TensorView(temperature.data(), DType::kF32, {n}),
                   TensorView(top_k.data(), DType::kI32, {n}),
                   TensorView(top_p.data(), DType::kF32, {n}),
                   TensorView(min_p.data(), DType::kF32, {n}),
                   TensorView(seeds.data(), DType::kI64, {n}),
                   TensorView(steps.data(), DType::kI64, {n}),
                   TensorView(tokens.data(), DType::kI32, {n})});
  timer_.mark(StepPhase::kSample);
  std::vector<scheduler::SeqOutput> outputs;
  for (int64_t d = 0; d < n; ++d) {
    const Draw& draw = draws[d];
    SeqState& st = *seqs_.at(draw.seq);
    const SamplingParams& p = st.request->request.params;
    std::optional<TokenLogprob> logprob;
    // Logprobs come from the raw distribution (before penalties), as vLLM reports them.
    if (p.logprobs >= 0) {
      logprob = compute_logprob(
          std::span<const float>(logits + static_cast<int64_t>(draw.row) * vocab, vocab),
          tokens[d], p.logprobs);
    }
    scheduler::SeqOutput o{draw.seq, {tokens[d]}, FinishReason::kNone};
    const bool is_eos = std::find(eos_token_ids_.begin(), eos_token_ids_.end(), tokens[d]) !=
                        eos_token_ids_.end();
    const bool is_stop_token = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(),
                                         tokens[d]) != p.stop_token_ids.end();
    if ((is_eos && !p.ignore_eos) || is_stop_token) o.finish = FinishReason::kStop;
    ++st.output_counts[tokens[d]];
    ++st.num_output;
    ++stats_.generation_tokens;
    ++st.request->usage.completion_tokens;
    outputs.push_back(o);
    emit(o, logprob ? &*logprob : nullptr);
    if (st.stops.matched()) outputs.back().finish = FinishReason::kStop;
  }
  return outputs;
}

void Engine::emit(const scheduler::SeqOutput& sampled, const TokenLogprob* logprob) {
  SeqState& st = *seqs_.at(sampled.seq_id);
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
