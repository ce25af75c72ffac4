#include "engine/output_processor.h"

#include <algorithm>
#include <span>
#include <string>

namespace sieve::engine {

using scheduler::FinishReason;
using scheduler::SeqId;

SeqState::SeqState(RequestState* r, int i, std::unique_ptr<models::IncrementalDetokenizer> d)
    : request(r),
      index(i),
      detokenizer(std::move(d)),
      stops(r->request.params.stop, r->request.params.include_stop_str_in_output) {
  if (has_penalties(r->request.params)) {
    penalty_tokens.emplace(r->request.params, r->request.prompt_token_ids);
  }
}

OutputProcessor::OutputProcessor(const models::Tokenizer* tokenizer,
                                 std::vector<int32_t> eos_token_ids)
    : tokenizer_(tokenizer), eos_token_ids_(std::move(eos_token_ids)) {}

RequestState& OutputProcessor::add_request(RequestId id, Request request,
                                           std::shared_ptr<OutputStream> stream, uint64_t seed) {
  auto state = std::make_unique<RequestState>();
  state->id = id;
  state->seed = seed;
  state->usage.prompt_tokens = static_cast<int>(request.prompt_token_ids.size());
  state->request = std::move(request);
  state->stream = std::move(stream);
  return *requests_.insert_or_assign(id, std::move(state)).first->second;
}

void OutputProcessor::reject(const Request& request, OutputStream& stream, const Status& error) {
  RequestOutput out;
  out.finish_reason = "error";
  out.error = std::string(error.message());
  out.finished_request = true;
  out.usage.prompt_tokens = static_cast<int>(request.prompt_token_ids.size());
  stream.push(std::move(out));
}

SeqState& OutputProcessor::seq(SeqId id, RequestId request, int index) {
  auto it = seqs_.find(id);
  if (it != seqs_.end()) return *it->second;
  RequestState* r = requests_.at(request).get();
  // The prompt's last ids are the detokenizer's context, so a first token's leading space
  // (SentencePiece "▁Paris") streams as HF decodes it within the whole sequence.
  const std::vector<int32_t>& prompt = r->request.prompt_token_ids;
  const size_t context = std::min<size_t>(prompt.size(), 4);
  auto detokenizer =
      tokenizer_ ? tokenizer_->make_detokenizer(r->request.params.skip_special_tokens,
                                                std::span<const int32_t>(prompt).last(context))
                 : nullptr;
  return *seqs_.emplace(id, std::make_unique<SeqState>(r, index, std::move(detokenizer)))
              .first->second;
}

void OutputProcessor::note_prefill_chunk(const scheduler::ScheduledSeq& s,
                                         std::chrono::steady_clock::time_point step_start) {
  RequestState& r = *requests_.at(s.request_id);
  if (!r.counted_cache) r.first_scheduled = step_start;
  if (!r.counted_cache && s.num_computed_tokens > 0 && s.sample_index == 0) {
    r.usage.cached_prompt_tokens = std::min(s.num_computed_tokens, r.usage.prompt_tokens);
  }
  r.counted_cache = true;
}

void OutputProcessor::process_token(SeqState& st, SeqId seq, int32_t token,
                                    const TokenLogprob* logprob, scheduler::SeqOutput& o) {
  const SamplingParams& p = st.request->request.params;
  o.seq_id = seq;
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
  emit(st, o, logprob);
  if (st.stops.matched()) o.finish = FinishReason::kStop;
}

void OutputProcessor::emit(SeqState& st, const scheduler::SeqOutput& sampled,
                           const TokenLogprob* logprob) {
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

void OutputProcessor::finish(const scheduler::FinishedSeq& f, kvcache::KvManager& kv) {
  auto request_it = requests_.find(f.request_id);
  if (request_it == requests_.end()) return;
  RequestState& r = *request_it->second;
  if (const std::optional<kvcache::ReleasedSeq> held = kv.take_released(f.seq_id)) {
    r.usage.kv_tokens_kept += held->num_kept_tokens;
    r.usage.kv_bytes += static_cast<int64_t>(held->num_pages) * kv.config().page_bytes;
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

}  // namespace sieve::engine
