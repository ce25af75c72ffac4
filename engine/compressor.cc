#include "engine/compressor.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kvcache/page_table.h"
#include "kvcache/policies/protection.h"
#include "models/tokenizer/chat_template.h"
#include "spdlog/spdlog.h"

namespace sieve::engine {

using kvcache::CompressionSpec;
using kvcache::kMaxQueryWindow;
using kvcache::SeqId;

// One sequence's query statistics (QueryMomentArgs) and how many queries they hold; shared with
// the sequence's forked children, which read them at the same prefill-end action.
struct Compressor::Moments {
  Tensor sums;  // f32 [num_layers, num_heads, head_dim * (head_dim + 1)]
  int64_t count = 0;
};

struct Compressor::SeqState {
  std::shared_ptr<const CompressionSpec> spec;
  kvcache::PolicyNeeds needs;
  int budget = 0;
  double budget_exact = 0;
  int system_prompt_tokens = 0;
  std::vector<int32_t> segment_bounds;  // fair eviction's, for this prompt
  bool prefilled = false;               // the prefill-end check ran
  int last_check = 0;                   // the cache's token count at the last check
  int ring = -1;                        // the query ring it holds, or -1
  int num_captured = 0;                 // rows of the current window captured so far
  // A compacted sequence's packed survivors: their token positions per (layer, KV head) row;
  // slots appended since hold positions first_appended_position on.
  std::vector<std::vector<int32_t>> kept_positions;
  int first_appended_position = 0;
  std::vector<std::vector<float>> state;  // PolicyNeeds::slot_state, per row, per packed slot
  std::shared_ptr<Moments> moments;  // PolicyNeeds::expected_logits, from the first prompt chunk
  bool moments_missed = false;       // no statistics this prefill (none free, or out of memory)
};

ReconstructionPrompt make_reconstruction_prompt(const models::Tokenizer& tokenizer) {
  ReconstructionPrompt p;
  std::string prefix, suffix = "\n";  // a tokenizer without a chat template
  if (!tokenizer.chat_template().empty()) {
    // A user message of a marker and a separator: the text before the marker is the prefix,
    // after the separator the suffix (KVPress's dummy context and separator).
    const std::string marker = "dummy context";
    std::string separator(marker.size() + 1, '#');
    separator[0] = '\n';
    models::ChatMessage user{"user", marker};
    user.content.append(separator);
    auto text = models::apply_chat_template(models::chat_template_for(tokenizer, ""),
                                            std::span(&user, 1), /*add_generation_prompt=*/true);
    const size_t at = text.ok() ? text->find(separator) : std::string::npos;
    const size_t open = text.ok() ? text->find(marker) : std::string::npos;
    if (at == std::string::npos || open == std::string::npos || open > at) {
      spdlog::warn("kvzip: the chat template does not render a user turn; kvzip is unavailable");
      return p;
    }
    prefix = text->substr(0, open);
    suffix = text->substr(at + separator.size());
  }
  p.prefix_length = static_cast<int>(tokenizer.encode(prefix, false).size());
  p.first_question = tokenizer.encode("\n\nRepeat the previous context exactly.", false);
  p.next_question =
      tokenizer.encode("\n\nRepeat the part of the previous context exactly, starting with", false);
  p.suffix = tokenizer.encode(suffix, false);
  p.available = true;
  return p;
}

void copy_pages(kernels::Backend& backend, const TensorView& arena,
                const kernels::KvCacheLayout& layout, std::span<const kvcache::PageCopy> copies) {
  if (copies.empty()) return;
  std::vector<int32_t> src, dst;
  for (const kvcache::PageCopy& copy : copies) {
    src.push_back(copy.src);
    dst.push_back(copy.dst);
  }
  const int64_t n = static_cast<int64_t>(src.size());
  backend.copy_pages({arena, layout, TensorView(src.data(), DType::kI32, {n}),
                      TensorView(dst.data(), DType::kI32, {n})});
}

Compressor::Compressor(kernels::Backend& backend, models::ModelRunner& model,
                       kvcache::KvManager& kv, const TensorView& arena,
                       const kernels::KvCacheLayout& layout, const models::ModelConfig& config)
    : backend_(backend),
      model_(model),
      kv_(kv),
      arena_(arena),
      layout_(layout),
      num_heads_(config.num_heads),
      config_(config) {}

Compressor::~Compressor() = default;

StatusOr<std::unique_ptr<Compressor>> Compressor::create(
    kernels::Backend& backend, models::ModelRunner& model, kvcache::KvManager& kv,
    const TensorView& arena, const kernels::KvCacheLayout& layout, int num_rings,
    ReconstructionPrompt reconstruction) {
  const models::ModelConfig& c = model.config();
  std::unique_ptr<Compressor> compressor(new Compressor(backend, model, kv, arena, layout, c));
  compressor->max_moment_sets_ = num_rings;
  compressor->reconstruction_ = std::move(reconstruction);
  if (num_rings > 0) {
    ASSIGN_OR_RETURN(
        compressor->query_store_,
        backend.allocate(backend.compute_dtype(),
                         {c.num_layers, int64_t{num_rings} * kMaxQueryWindow, c.q_dim()}));
    model.set_query_store(compressor->query_store_);
    for (int r = num_rings - 1; r >= 0; --r) compressor->free_rings_.push_back(r);
  }
  return compressor;
}

void Compressor::add(SeqId seq, std::shared_ptr<const CompressionSpec> spec, int prompt_tokens,
                     int system_prompt_tokens) {
  auto st = std::make_unique<SeqState>();
  st->needs = spec->policy->needs(*spec->params);
  st->budget = spec->budget_for(prompt_tokens);
  st->budget_exact = spec->exact_budget_for(prompt_tokens);
  st->spec = std::move(spec);
  st->system_prompt_tokens = system_prompt_tokens;
  st->segment_bounds =
      kvcache::segment_bounds(st->spec->protection, system_prompt_tokens, prompt_tokens);
  seqs_[seq] = std::move(st);
}

int Compressor::kv_tokens_to_hold(SeqId seq) const {
  const auto it = seqs_.find(seq);
  if (it == seqs_.end() || it->second->spec->interval == 0) return 0;
  const SeqState& st = *it->second;
  const kvcache::Protection& protection = st.spec->protection;
  // Protected slots are kept whatever the budget; overlaps counted twice keep this an upper bound.
  int num_protected = protection.sink + protection.window +
                      (protection.protect_system_prompt ? st.system_prompt_tokens : 0);
  for (const auto& span : protection.spans) num_protected += span.second - span.first;
  const int row = st.spec->policy->max_row_slots(*st.spec->params, st.budget, layout_.num_kv_heads);
  return std::max(row, num_protected) + st.spec->interval;
}

void Compressor::fork(SeqId parent, SeqId child) {
  const auto it = seqs_.find(parent);
  if (it == seqs_.end()) return;
  auto st = std::make_unique<SeqState>(*it->second);
  st->ring = -1;  // the parent's window serves its children at the parent's action
  st->num_captured = 0;
  seqs_[child] = std::move(st);
}

void Compressor::reset(SeqId seq) {
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  SeqState& st = *it->second;
  release_ring(st);
  st.prefilled = false;
  st.last_check = 0;
  st.moments.reset();
  st.moments_missed = false;
  st.kept_positions.clear();
  st.state.clear();
}

void Compressor::remove(SeqId seq) {
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  release_ring(*it->second);
  seqs_.erase(it);
}

void Compressor::release_ring(SeqState& st) {
  if (st.ring >= 0) free_rings_.push_back(st.ring);
  st.ring = -1;
  st.num_captured = 0;
}

void Compressor::plan_moments(const scheduler::ScheduledSeq& s, SeqState& st, int first_row,
                              models::StepBatch& batch) {
  if (st.prefilled || st.moments_missed) return;  // statistics of the prompt only
  const int first = std::max(st.needs.query_stats_from, s.num_computed_tokens);
  const int last = s.num_computed_tokens + s.num_new_tokens;
  if (first >= last) return;
  if (!st.moments) {
    const int64_t width = int64_t{layout_.head_dim} * (layout_.head_dim + 1);
    const int64_t numel = int64_t{layout_.num_layers} * num_heads_ * width;
    auto sums = moment_sets_ < max_moment_sets_
                    ? backend_.allocate(DType::kF32, {layout_.num_layers, num_heads_, width})
                    : StatusOr<Tensor>(ResourceExhaustedError("no free query statistics"));
    if (!sums.ok()) {
      SPDLOG_DEBUG("{}: no query statistics for this prompt: {}", st.spec->method,
                   sums.status().message());
      st.moments_missed = true;
      return;
    }
    std::vector<float> zeros(numel, 0.0f);
    backend_.copy(sums->view().reshape({numel}), TensorView(zeros.data(), DType::kF32, {numel}));
    ++moment_sets_;
    st.moments = std::shared_ptr<Moments>(new Moments{*std::move(sums), 0}, [this](Moments* m) {
      --moment_sets_;
      delete m;
    });
  }
  batch.moment_rows.push_back({first_row + first - s.num_computed_tokens,
                               first_row + last - s.num_computed_tokens, st.moments->sums.view()});
  st.moments->count += last - first;
}

void Compressor::plan_captures(const scheduler::SchedulerOutput& out,
                               const scheduler::Scheduler& scheduler, models::StepBatch& batch) {
  batch.moment_rows.clear();
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    const scheduler::ScheduledSeq& s = out.scheduled[i];
    const auto it = seqs_.find(s.seq_id);
    if (it == seqs_.end()) continue;
    SeqState& st = *it->second;
    if (st.needs.expected_logits) plan_moments(s, st, batch.qo_indptr[i], batch);
    if (!st.needs.any_window()) continue;
    const scheduler::Sequence* seq = scheduler.find(s.seq_id);
    if (seq == nullptr) continue;
    // The window ends where the next check happens: the prompt's end, then every interval.
    if (st.prefilled && st.spec->interval == 0) continue;
    const int end = st.prefilled ? st.last_check + st.spec->interval : seq->num_tokens();
    const int begin = std::max(0, end - st.spec->protection.window);
    const int first = std::max(begin, s.num_computed_tokens);
    const int last = std::min(end, s.num_computed_tokens + s.num_new_tokens);
    if (first >= last) continue;
    if (st.ring < 0) {
      if (free_rings_.empty()) continue;  // this window goes without; counted when it is due
      st.ring = free_rings_.back();
      free_rings_.pop_back();
      st.num_captured = 0;
    }
    for (int position = first; position < last; ++position) {
      batch.capture_rows.push_back(batch.qo_indptr[i] + position - s.num_computed_tokens);
      batch.capture_slots.push_back(st.ring * kMaxQueryWindow + position - begin);
      ++st.num_captured;
    }
  }
}

void Compressor::act(const scheduler::SchedulerOutput& out, const scheduler::Scheduler& scheduler) {
  std::vector<Action> due;
  auto add = [&](SeqId seq, SeqState& st, bool at_prefill_end, int cached, int ring,
                 int num_captured) {
    Action& a = due.emplace_back();
    a.seq = seq;
    a.st = &st;
    a.at_prefill_end = at_prefill_end;
    a.cached_tokens = cached;
    a.ring = ring;
    a.num_captured = num_captured;
    a.moments = st.moments;
    if (at_prefill_end && st.needs.reconstruction_chunk > 0) {
      const std::vector<int32_t>& tokens = scheduler.find(seq)->token_ids;
      a.prompt.assign(tokens.begin(), tokens.begin() + std::min<size_t>(cached, tokens.size()));
    }
  };
  std::vector<int> rings_to_release;
  for (const scheduler::ScheduledSeq& s : out.scheduled) {
    const auto it = seqs_.find(s.seq_id);
    if (it == seqs_.end()) continue;
    SeqState& st = *it->second;
    const scheduler::Sequence* seq = scheduler.find(s.seq_id);
    if (seq == nullptr || !kv_.has_sequence(s.seq_id)) continue;  // finished this step
    const int cached = seq->num_computed_tokens;
    if (!st.prefilled) {
      if (!s.sample) continue;  // the prefill goes on
      st.prefilled = true;
      st.last_check = cached;
      add(s.seq_id, st, /*at_prefill_end=*/true, cached, st.ring, st.num_captured);
      // Children forked this step share the prompt and take the same window and statistics.
      for (const scheduler::Fork& f : out.forks) {
        if (f.parent != s.seq_id || !seqs_.contains(f.child) || !kv_.has_sequence(f.child)) {
          continue;
        }
        SeqState& child = *seqs_.at(f.child);
        child.prefilled = true;
        child.last_check = cached;
        child.moments = st.moments;
        add(f.child, child, /*at_prefill_end=*/true, cached, st.ring, st.num_captured);
        if (child.spec->interval == 0) child.moments.reset();
      }
    } else {
      if (st.spec->interval == 0 || cached < st.last_check + st.spec->interval) continue;
      st.last_check = cached;
      add(s.seq_id, st, /*at_prefill_end=*/false, cached, st.ring, st.num_captured);
    }
    // The window was read into the actions; the ring serves the next window.
    if (st.ring >= 0) rings_to_release.push_back(st.ring);
    st.ring = -1;
    st.num_captured = 0;
    if (st.spec->interval == 0) st.moments.reset();  // no later action reads them
  }
  // In groups, so host memory for signals stays bounded: signals on the engine thread (they
  // use the backend), decisions in parallel (pure functions of each action's data), compaction
  // back on the engine thread in the actions' order.
  const int group = std::max(1, 2 * omp_get_max_threads());
  for (size_t begin = 0; begin < due.size(); begin += group) {
    const size_t end = std::min(due.size(), begin + group);
    auto t0 = std::chrono::steady_clock::now();
    for (size_t i = begin; i < end; ++i) due[i].wanted = gather(due[i]);
    auto t1 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(dynamic, 1) if (end - begin > 1)
    for (size_t i = begin; i < end; ++i) {
      if (due[i].wanted) decide(due[i]);
    }
    auto t2 = std::chrono::steady_clock::now();
    for (size_t i = begin; i < end; ++i) {
      if (due[i].wanted) commit(due[i]);
    }
    auto t3 = std::chrono::steady_clock::now();
    auto ns = [](auto d) {
      return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    };
    stats_.gather_ns += ns(t1 - t0);
    stats_.decide_ns += ns(t2 - t1);
    stats_.commit_ns += ns(t3 - t2);
  }
  for (int ring : rings_to_release) free_rings_.push_back(ring);
}

bool Compressor::gather(Action& a) {
  a.start = std::chrono::steady_clock::now();
  const SeqState& st = *a.st;
  const int rows = layout_.num_layers * layout_.num_kv_heads;
  a.valid_lens.resize(rows);
  a.slot_stride = 0;
  bool over_budget = false;
  for (int l = 0; l < layout_.num_layers; ++l) {
    for (int h = 0; h < layout_.num_kv_heads; ++h) {
      const int n = kv_.head_valid_len(a.seq, l, h);
      a.valid_lens[l * layout_.num_kv_heads + h] = n;
      a.slot_stride = std::max(a.slot_stride, n);
      over_budget = over_budget || n > st.budget;
    }
  }
  if (!over_budget) return false;
  const int window = st.spec->protection.window;
  const int num_queries = std::min(window, kv_.num_tokens(a.seq));
  if (st.needs.any_window() && (a.ring < 0 || a.num_captured < num_queries)) {
    ++stats_.skipped_actions;
    SPDLOG_DEBUG("sequence {}: {} skips an action without its window's queries", a.seq,
                 st.spec->method);
    return false;
  }
  if (st.needs.expected_logits && (!a.moments || a.moments->count == 0)) {
    ++stats_.skipped_actions;
    SPDLOG_DEBUG("sequence {}: {} skips an action without query statistics", a.seq,
                 st.spec->method);
    return false;
  }
  const kvcache::HeadLengths head = kv_.head_lengths(a.seq);
  a.prefix_lens.assign(head.prefix_lens.begin(), head.prefix_lens.end());
  a.gap_end = head.gap_end;
  a.num_queries = st.needs.any_window() ? num_queries : 0;
  const kvcache::PolicyNeeds& n = st.needs;
  if (n.reconstruction_chunk > 0 && !reconstruct(a)) {
    ++stats_.skipped_actions;
    SPDLOG_DEBUG("sequence {}: {} skips an action without its reconstruction pass", a.seq,
                 st.spec->method);
    return false;
  }
  if (n.any_window() || n.key_norms || n.value_norms || n.key_anchor_dot || n.expected_logits) {
    if (!ensure_signal_buffers(a.slot_stride).ok()) {
      ++stats_.skipped_actions;
      return false;
    }
    compute_signals(a);
  }
  a.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - a.start).count();
  return true;
}

void Compressor::decide(Action& a) const {
  const auto start = std::chrono::steady_clock::now();
  const SeqState& st = *a.st;
  const int rows = layout_.num_layers * layout_.num_kv_heads;
  const int stride = a.slot_stride;
  // Each slot's token position.
  a.positions.assign(static_cast<size_t>(rows) * stride, 0);
  for (int r = 0; r < rows; ++r) {
    int32_t* p = a.positions.data() + static_cast<size_t>(r) * stride;
    const int packed = a.prefix_lens.empty() ? 0 : a.prefix_lens[r];
    for (int v = 0; v < a.valid_lens[r]; ++v) {
      p[v] = v < packed ? st.kept_positions[r][v]
                        : (a.prefix_lens.empty() ? v : st.first_appended_position + v - packed);
    }
  }
  const std::vector<uint8_t> protect = kvcache::protected_slots(
      st.spec->protection, st.system_prompt_tokens, a.positions, a.valid_lens, stride);
  if (st.needs.slot_state) {
    a.state.assign(static_cast<size_t>(rows) * stride, 0.0f);
    for (int r = 0; r < rows && !st.state.empty(); ++r) {
      std::copy(st.state[r].begin(), st.state[r].end(), a.state.begin() + r * stride);
    }
  }
  kvcache::Signals signals;
  signals.num_queries = a.num_queries;
  auto span = [](const std::vector<float>& v) { return std::span<const float>(v); };
  signals.window_attention = span(a.window_attention);
  signals.window_attention_group_max = span(a.group_max);
  signals.key_norms = span(a.key_norms);
  signals.value_norms = span(a.value_norms);
  signals.key_anchor_dot = span(a.anchor_dot);
  signals.expected_logits = span(a.expected_logits);
  signals.reconstruction_max = span(a.reconstruction_max);

  kvcache::PolicyInput in;
  in.num_layers = layout_.num_layers;
  in.num_kv_heads = layout_.num_kv_heads;
  in.num_heads = num_heads_;
  in.valid_lens = a.valid_lens;
  in.slot_stride = stride;
  in.protected_slots = protect;
  in.positions = a.positions;
  in.budget = st.budget;
  in.budget_exact = st.budget_exact;
  in.window = st.spec->protection.window;
  in.at_prefill_end = a.at_prefill_end;
  in.signals = signals;
  in.segment_bounds = st.segment_bounds;
  in.state = a.state;
  in.params = st.spec->params.get();
  a.keep = st.spec->policy->decide(in);
  kvcache::check_decision(in, a.keep, st.spec->policy->name());

  // What compaction needs: each row's count and its kept slots' physical indices (before the
  // compaction moves them), and the survivors' positions and state once it has.
  a.counts.resize(rows);
  a.max_keep = 1;
  for (int r = 0; r < rows; ++r) {
    a.counts[r] = a.keep.indptr[r + 1] - a.keep.indptr[r];
    a.max_keep = std::max(a.max_keep, a.counts[r]);
  }
  a.physical.assign(static_cast<size_t>(rows) * a.max_keep, 0);
  a.kept_positions.assign(rows, {});
  if (st.needs.slot_state) a.kept_state.assign(rows, {});
  for (int r = 0; r < rows; ++r) {
    a.kept_positions[r].reserve(a.counts[r]);
    for (int i = a.keep.indptr[r]; i < a.keep.indptr[r + 1]; ++i) {
      const int v = a.keep.slots[i];
      const size_t slot = static_cast<size_t>(r) * stride + v;
      const int p =
          a.prefix_lens.empty() || v < a.prefix_lens[r] ? v : a.gap_end + (v - a.prefix_lens[r]);
      a.physical[static_cast<size_t>(r) * a.max_keep + (i - a.keep.indptr[r])] = p;
      a.kept_positions[r].push_back(a.positions[slot]);
      if (st.needs.slot_state) a.kept_state[r].push_back(a.state[slot]);
    }
  }
  a.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void Compressor::commit(Action& a) {
  const auto start = std::chrono::steady_clock::now();
  SeqState& st = *a.st;
  auto result = kv_.compact(a.seq, a.counts);
  if (!result.ok()) {  // the pool is short of pages for copy-on-write: try at the next check
    ++stats_.skipped_actions;
    SPDLOG_DEBUG("sequence {}: compaction postponed: {}", a.seq, result.status().message());
    return;
  }
  copy_pages(backend_, arena_, layout_, result->copies);
  const int64_t l = layout_.num_layers, hkv = layout_.num_kv_heads;
  backend_.compact_kv({arena_, layout_.for_format(kv_.format(a.seq)),
                       TensorView(result->source_pages.data(), DType::kI32,
                                  {static_cast<int64_t>(result->source_pages.size())}),
                       TensorView(a.physical.data(), DType::kI32, {l, hkv, a.max_keep}),
                       TensorView(a.counts.data(), DType::kI32, {l * hkv})});
  // No synchronize: a backend reads host index arrays before its op returns (CUDA stages them
  // with copies that return once the pageable source was read), and later work is stream-ordered.
  st.kept_positions = std::move(a.kept_positions);
  if (st.needs.slot_state) st.state = std::move(a.kept_state);
  if (observer_) observer_(a.seq, st.kept_positions);
  // Slots appended from now on hold the tokens after the cache's last one.
  st.first_appended_position = a.cached_tokens;
  const int rows = layout_.num_layers * layout_.num_kv_heads;
  int64_t dropped = 0;
  for (int r = 0; r < rows; ++r) dropped += a.valid_lens[r] - a.counts[r];
  ++stats_.actions;
  stats_.evicted_tokens += dropped / rows;
  a.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard<std::mutex> lock(seconds_mutex_);
  if (action_seconds_.size() < 4096) action_seconds_.push_back(a.seconds);
}

Status Compressor::ensure_signal_buffers(int slot_stride) {
  if (slot_stride <= signal_stride_) return OkStatus();
  // Grown to the longest sequence an action has seen (rounded up), never shrunk: few actions
  // allocate, and none once the longest context has been compressed once.
  const int stride = std::max(slot_stride, 2 * signal_stride_);
  const int64_t l = layout_.num_layers;
  auto grow = [&](Tensor& t, int64_t heads) -> Status {
    ASSIGN_OR_RETURN(t, backend_.allocate(DType::kF32, {l * heads * stride}));
    return OkStatus();
  };
  RETURN_IF_ERROR(grow(window_attention_, num_heads_));
  RETURN_IF_ERROR(grow(group_max_, layout_.num_kv_heads));
  RETURN_IF_ERROR(grow(key_norms_, layout_.num_kv_heads));
  RETURN_IF_ERROR(grow(value_norms_, layout_.num_kv_heads));
  RETURN_IF_ERROR(grow(anchor_dot_, layout_.num_kv_heads));
  RETURN_IF_ERROR(grow(expected_logits_, num_heads_));
  signal_stride_ = stride;
  return OkStatus();
}

void Compressor::compute_signals(Action& a) {
  const SeqState& st = *a.st;
  const kvcache::PolicyNeeds& needs = st.needs;
  const int slot_stride = a.slot_stride;
  const kvcache::PageTable& table = kv_.page_table(a.seq);
  const int64_t l = layout_.num_layers, hkv = layout_.num_kv_heads;
  kernels::KvSignalArgs k;
  k.arena = arena_;
  k.layout = layout_.for_format(kv_.format(a.seq));
  k.page_table = TensorView(const_cast<int32_t*>(table.pages.data()), DType::kI32,
                            {static_cast<int64_t>(table.pages.size())});
  k.num_tokens = table.num_tokens;
  if (!a.prefix_lens.empty()) {
    k.head_lens = TensorView(a.prefix_lens.data(), DType::kI32, {l * hkv});
    k.gap_end = a.gap_end;
  }
  if (a.num_queries > 0) {
    const int64_t row0 = int64_t{a.ring} * kMaxQueryWindow;
    k.queries = query_store_.view()
                    .slice(1, row0, row0 + a.num_queries)
                    .unflatten(2, num_heads_, layout_.head_dim);
    k.num_queries = a.num_queries;
  }
  k.scale = 1.0f / std::sqrt(static_cast<float>(layout_.head_dim));
  k.slot_stride = slot_stride;
  const Device device = arena_.device();
  auto view = [&](const Tensor& t, int64_t heads, bool wanted) {
    return wanted ? TensorView(t.view().raw(), DType::kF32, {l, heads, slot_stride}, device)
                  : TensorView();
  };
  k.window_attention = view(window_attention_, num_heads_, needs.window_attention);
  k.window_attention_group_max = view(group_max_, hkv, needs.window_attention_group_max);
  k.key_norms = view(key_norms_, hkv, needs.key_norms);
  k.value_norms = view(value_norms_, hkv, needs.value_norms);
  k.key_anchor_dot = view(anchor_dot_, hkv, needs.key_anchor_dot);
  backend_.kv_signals(k);
  if (needs.expected_logits) {
    kernels::ExpectedLogitArgs e;
    e.arena = k.arena;
    e.layout = k.layout;
    e.page_table = k.page_table;
    e.num_tokens = k.num_tokens;
    e.head_lens = k.head_lens;
    e.gap_end = k.gap_end;
    compute_expected_logits(e, a);
  }
  auto to_host = [&](const TensorView& device_view, std::vector<float>& host) {
    if (device_view.empty()) return;
    host.resize(device_view.numel());
    backend_.copy(TensorView(host.data(), DType::kF32, {device_view.numel()}),
                  device_view.reshape({device_view.numel()}));
  };
  to_host(k.window_attention, a.window_attention);
  to_host(k.window_attention_group_max, a.group_max);
  to_host(k.key_norms, a.key_norms);
  to_host(k.value_norms, a.value_norms);
  to_host(k.key_anchor_dot, a.anchor_dot);
  to_host(view(expected_logits_, num_heads_, needs.expected_logits), a.expected_logits);
  backend_.synchronize();
}

bool Compressor::reconstruct(Action& a) {
  const SeqState& st = *a.st;
  const ReconstructionPrompt& prompt = reconstruction_;
  const int cached = a.cached_tokens;
  if (!prompt.available || !a.at_prefill_end || !a.prefix_lens.empty() ||
      static_cast<int>(a.prompt.size()) != cached || free_rings_.empty()) {
    return false;
  }
  // The chunks of the prompt after the template's prefix, each with its repeat tokens.
  struct Chunk {
    int begin, end;
    std::vector<int32_t> tokens;
  };
  std::vector<Chunk> chunks;
  const int chunk_size = st.needs.reconstruction_chunk;
  int longest = 0;
  for (int begin = std::min(prompt.prefix_length, cached); begin < cached; begin += chunk_size) {
    Chunk c{begin, std::min(cached, begin + chunk_size), {}};
    if (chunks.empty()) {
      c.tokens = prompt.first_question;
    } else {
      c.tokens = prompt.next_question;
      c.tokens.insert(c.tokens.end(),
                      a.prompt.begin() + std::max(chunks.back().begin,
                                                  begin - ReconstructionPrompt::kPreviousTokens),
                      a.prompt.begin() + begin);
    }
    c.tokens.insert(c.tokens.end(), prompt.suffix.begin(), prompt.suffix.end());
    c.tokens.insert(c.tokens.end(), a.prompt.begin() + c.begin, a.prompt.begin() + c.end);
    longest = std::max(longest, static_cast<int>(c.tokens.size()));
    chunks.push_back(std::move(c));
  }
  if (chunks.empty()) return false;
  // The repeat tokens follow the sequence's slots: the free rest of its last page (written past
  // its length, which nothing reads before the sequence's own next tokens overwrite it), then
  // borrowed pages.
  const kvcache::PageTable& own = kv_.page_table(a.seq);
  const models::StepLimits& limits = model_.limits();
  const int pages = kvcache::pages_for_tokens(cached + longest, own.tokens_per_page);
  if (own.num_tokens != cached || pages > limits.max_kv_indices) return false;
  const int stride = cached + longest;
  const int64_t l = layout_.num_layers, hkv = layout_.num_kv_heads;
  if (reconstruction_max_.view().numel() < l * hkv * stride) {
    auto buffer = backend_.allocate(DType::kF32, {l * hkv * stride});
    if (!buffer.ok()) return false;
    reconstruction_max_ = *std::move(buffer);
  }
  std::optional<std::vector<kvcache::PageId>> borrowed = kv_.borrow_pages(pages - own.num_pages());
  if (!borrowed) return false;
  std::vector<kvcache::PageId> all_pages = own.pages;
  all_pages.insert(all_pages.end(), borrowed->begin(), borrowed->end());
  kvcache::PageTable table{own.tokens_per_page, 0, {}};
  const int ring = free_rings_.back();
  const TensorView out =
      reconstruction_max_.view().slice(0, 0, l * hkv * stride).reshape({l, hkv, stride});
  std::vector<float> zeros(out.numel(), 0.0f);
  backend_.copy(out.reshape({out.numel()}), TensorView(zeros.data(), DType::kF32, {out.numel()}));

  const kvcache::KvFormatId format = kv_.format(a.seq);
  const int step = std::min(kMaxQueryWindow, limits.max_num_tokens);
  kernels::KvSignalArgs k;
  k.arena = arena_;
  k.layout = layout_.for_format(format);
  k.scale = 1.0f / std::sqrt(static_cast<float>(layout_.head_dim));
  k.slot_stride = stride;
  k.window_attention_max = out;
  models::StepBatch b;
  kvcache::BatchPageTables csr;
  for (const Chunk& c : chunks) {
    const int repeat = static_cast<int>(c.tokens.size());
    // Each chunk's pass attends to the cache and its own repeat tokens; the scores' softmax
    // covers the sinks, the chunk and the repeat tokens alone, as KVPress's does.
    k.skip_begin[0] = std::min(st.spec->protection.sink, c.begin);
    k.skip_end[0] = c.begin;
    k.skip_begin[1] = c.end;
    k.skip_end[1] = cached;
    for (int first = 0; first < repeat; first += step) {
      const int n = std::min(step, repeat - first);
      b = models::StepBatch{};
      for (int i = 0; i < n; ++i) {
        b.token_ids.push_back(c.tokens[first + i]);
        b.positions.push_back(cached + first + i);
        b.capture_rows.push_back(i);
        b.capture_slots.push_back(ring * kMaxQueryWindow + i);
      }
      b.qo_indptr = {0, n};
      b.rope_lens = {cached + repeat};
      if (format != layout_.kv_format()) b.kv_formats = {static_cast<int32_t>(format)};
      b.logits_indices = {n - 1};  // unused; the runner computes at least one row
      table.num_tokens = cached + first + n;
      table.pages.assign(
          all_pages.begin(),
          all_pages.begin() + kvcache::pages_for_tokens(table.num_tokens, table.tokens_per_page));
      const kvcache::BatchSeq seq{&table, n};
      kvcache::build_batch_page_tables(std::span(&seq, 1), &csr);
      b.kv_indptr = csr.kv_indptr;
      b.kv_indices = csr.kv_indices;
      b.kv_lens = csr.kv_lens;
      b.slot_mapping = csr.slot_mapping;
      model_.execute(b);
      k.page_table =
          TensorView(table.pages.data(), DType::kI32, {static_cast<int64_t>(table.pages.size())});
      k.num_tokens = table.num_tokens;
      const int64_t row0 = int64_t{ring} * kMaxQueryWindow;
      k.queries =
          query_store_.view().slice(1, row0, row0 + n).unflatten(2, num_heads_, layout_.head_dim);
      k.num_queries = n;
      backend_.kv_signals(k);
    }
  }
  // The scores of the sequence's own slots, in the action's rows.
  std::vector<float> host(out.numel());
  backend_.copy(TensorView(host.data(), DType::kF32, {out.numel()}), out.reshape({out.numel()}));
  backend_.synchronize();
  kv_.return_pages(*borrowed);
  a.reconstruction_max.assign(static_cast<size_t>(l * hkv) * a.slot_stride, 0.0f);
  for (int64_t r = 0; r < l * hkv; ++r) {
    std::copy_n(host.begin() + r * stride, std::min(cached, a.slot_stride),
                a.reconstruction_max.begin() + r * a.slot_stride);
  }
  return true;
}

void Compressor::compute_expected_logits(const kernels::ExpectedLogitArgs& cache, const Action& a) {
  const SeqState& st = *a.st;
  const int slot_stride = a.slot_stride, cached_tokens = a.cached_tokens;
  // The RoPE rotation averaged over the positions after the sequence: per pair, the mean of
  // cos and sin of its angle (times YaRN's attention scaling, as the model's RoPE applies it).
  const int first = cached_tokens, count = st.needs.future_positions;
  const models::RopeFrequencies rope = models::compute_rope_frequencies(config_, first + count);
  const int64_t half = static_cast<int64_t>(rope.inv_freq.size());
  std::vector<float> avg_cos(half), avg_sin(half);
  for (int64_t i = 0; i < half; ++i) {
    double c = 0, s = 0;
    for (int p = first; p < first + count; ++p) {
      // In f32 as the model computes its angles.
      const float angle = rope.inv_freq[i] * static_cast<float>(p);
      c += std::cos(angle);
      s += std::sin(angle);
    }
    avg_cos[i] = static_cast<float>(c / count * rope.attention_scaling);
    avg_sin[i] = static_cast<float>(s / count * rope.attention_scaling);
  }
  kernels::ExpectedLogitArgs e = cache;
  e.moments = a.moments->sums.view();
  e.count = a.moments->count;
  e.rope_cos = TensorView(avg_cos.data(), DType::kF32, {half});
  e.rope_sin = TensorView(avg_sin.data(), DType::kF32, {half});
  e.covariance = st.needs.query_covariance;
  e.scale = 1.0f / std::sqrt(static_cast<float>(layout_.head_dim));
  e.slot_stride = slot_stride;
  e.out = TensorView(expected_logits_.view().raw(), DType::kF32,
                     {layout_.num_layers, num_heads_, slot_stride}, arena_.device());
  backend_.expected_logits(e);
}

std::vector<double> Compressor::take_action_seconds() {
  std::lock_guard<std::mutex> lock(seconds_mutex_);
  std::vector<double> out;
  out.swap(action_seconds_);
  return out;
}

}  // namespace sieve::engine
