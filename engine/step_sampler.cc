#include "engine/step_sampler.h"

#include <algorithm>

#include "core/hash.h"

namespace sieve::engine {

StepSampler::StepSampler(kernels::Backend& backend, models::ModelRunner& runner)
    : backend_(backend), runner_(runner), vocab_(runner.config().vocab_size) {}

StatusOr<std::unique_ptr<StepSampler>> StepSampler::create(kernels::Backend& backend,
                                                           models::ModelRunner& runner,
                                                           int max_num_seqs) {
  std::unique_ptr<StepSampler> s(new StepSampler(backend, runner));
  const int64_t vocab = s->vocab_;
  ASSIGN_OR_RETURN(s->prompt_logits_, backend.allocate(DType::kF32, {kPromptLogitRows, vocab}));
  ASSIGN_OR_RETURN(s->fork_logits_, backend.allocate(DType::kF32, {kForkRows, vocab}));
  s->host_logits_ = Tensor::empty(DType::kF32, {max_num_seqs, vocab});
  if (!backend.memory_is_host()) {
    s->host_prompt_logits_ = Tensor::empty(DType::kF32, {kPromptLogitRows, vocab});
  }
  return s;
}

const float* StepSampler::logits_on_host(const TensorView& device, Tensor& host, int64_t rows) {
  if (backend_.memory_is_host()) return device.data<float>();
  backend_.copy(host.view().slice(0, 0, rows), device.slice(0, 0, rows));
  backend_.synchronize();
  return host.data<float>();
}

void StepSampler::prompt_logprobs(const scheduler::SchedulerOutput& out,
                                  const models::StepBatch& batch, OutputProcessor& output) {
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
    RequestState& r = output.request(s.request_id);
    if (r.request.params.prompt_logprobs < 0) continue;
    const std::vector<int32_t>& prompt = r.request.prompt_token_ids;
    for (int j = 0; j < s.num_new_tokens; ++j) {
      const int position = s.num_computed_tokens + j;
      // Row `position` predicts prompt token position + 1; a recompute skips what was sent.
      const int next = position + 1;
      if (next >= static_cast<int>(prompt.size())) break;
      if (next != static_cast<int>(r.prompt_logprobs.size()) + 1) continue;
      rows.push_back({batch.qo_indptr[i] + j, prompt[next], &r, r.prompt_logprobs.size()});
      r.prompt_logprobs.emplace_back();  // filled below
    }
  }
  for (size_t begin = 0; begin < rows.size(); begin += kPromptLogitRows) {
    const size_t end = std::min(rows.size(), begin + kPromptLogitRows);
    std::vector<int32_t> indices;
    for (size_t k = begin; k < end; ++k) indices.push_back(rows[k].row);
    runner_.compute_logits(indices, prompt_logits_.view().slice(0, 0, end - begin));
    const float* host = logits_on_host(prompt_logits_, host_prompt_logits_, end - begin);
    for (size_t k = begin; k < end; ++k) {
      const Row& row = rows[k];
      const std::span<const float> logits(host + (k - begin) * vocab_, vocab_);
      row.request->prompt_logprobs[row.slot] =
          compute_logprob(logits, row.token, row.request->request.params.prompt_logprobs);
    }
  }
}

int64_t StepSampler::collect_draws(const scheduler::SchedulerOutput& out,
                                   const std::vector<int>& logits_rows,
                                   const scheduler::Scheduler& scheduler, OutputProcessor& output) {
  draws_.clear();
  sampling_.clear();
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    const scheduler::ScheduledSeq& s = out.scheduled[i];
    if (!s.sample) continue;
    draws_.push_back(
        {&output.seq(s.seq_id, s.request_id, s.sample_index), s.seq_id, logits_rows[i]});
  }
  const int64_t num_rows = static_cast<int64_t>(draws_.size());
  for (const scheduler::Fork& f : out.forks) {
    const auto parent = std::find_if(draws_.begin(), draws_.begin() + num_rows,
                                     [&](const Draw& d) { return d.seq == f.parent; });
    SIEVE_CHECK(parent != draws_.begin() + num_rows) << "fork of unsampled " << f.parent;
    const int row = parent->row;
    const scheduler::Sequence* child = scheduler.find(f.child);
    SIEVE_CHECK(child != nullptr);
    draws_.push_back({&output.seq(f.child, child->request_id, f.sample_index), f.child, row});
  }
  for (const Draw& draw : draws_) {
    const SeqState& st = *draw.state;
    sampling_.add(st.request->request.params,
                  splitmix64(st.request->seed + static_cast<uint64_t>(st.index)), st.num_output,
                  st.penalty_tokens ? &*st.penalty_tokens : nullptr, output.eos_token_ids());
  }
  return num_rows;
}

void StepSampler::sample(const scheduler::SchedulerOutput& out, const std::vector<int>& logits_rows,
                         const TensorView& step_logits, const scheduler::Scheduler& scheduler,
                         OutputProcessor& output) {
  const int64_t num_rows = collect_draws(out, logits_rows, scheduler, output);
  if (draws_.empty()) return;
  // Forks first: their copies of a parent's row are taken before the parent's own row is
  // penalized in place.
  num_host_rows_ = 0;
  const int64_t n = static_cast<int64_t>(draws_.size());
  for (int64_t begin = num_rows; begin < n; begin += kForkRows) {
    const int64_t end = std::min<int64_t>(n, begin + kForkRows);
    const TensorView rows = fork_logits_.view().slice(0, 0, end - begin);
    for (int64_t d = begin; d < end; ++d) {
      backend_.copy(rows.select(0, d - begin), step_logits.select(0, draws_[d].row));
    }
    sample_rows(rows, begin, end);
  }
  sample_rows(step_logits.slice(0, 0, num_rows), 0, num_rows);
}

void StepSampler::sample_rows(const TensorView& rows, int64_t begin, int64_t end) {
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

std::optional<TokenLogprob> StepSampler::logprob(size_t d) const {
  const Draw& draw = draws_[d];
  const SamplingParams& p = draw.state->request->request.params;
  // Logprobs come from the raw distribution (before penalties), as vLLM reports them.
  if (p.logprobs < 0) return std::nullopt;
  return compute_logprob(
      std::span<const float>(host_logits_.data<float>() + draw.host_row * vocab_, vocab_),
      sampling_.tokens()[d], p.logprobs);
}

}  // namespace sieve::engine
