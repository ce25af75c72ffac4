#pragma once
// Output processing: from drawn tokens to what a request's stream yields. It keeps each
// request's state (stream, seed, usage, prompt logprobs) and each sample's (incremental
// detokenizer, stop-string filter, penalty history, token count); turns a drawn token into its
// sequence's stop condition (EOS, stop tokens, stop strings) and a streamed chunk; and ends a
// sample with its last text and finish reason and, for the request's last, the final usage.
// One thread (the engine's) owns it.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "engine/output_stream.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/stop_strings.h"
#include "kvcache/kv_manager.h"
#include "models/tokenizer/tokenizer.h"
#include "scheduler/scheduler_output.h"

namespace sieve::engine {

struct RequestState {
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
struct SeqState {
  RequestState* request = nullptr;
  int index = 0;
  std::unique_ptr<models::IncrementalDetokenizer> detokenizer;
  StopStringFilter stops;
  std::optional<PenaltyTokens> penalty_tokens;  // with penalties only
  int num_output = 0;

  SeqState(RequestState* r, int i, std::unique_ptr<models::IncrementalDetokenizer> d);
};

class OutputProcessor {
 public:
  // `tokenizer` (may be null: no text output) outlives the processor.
  OutputProcessor(const models::Tokenizer* tokenizer, std::vector<int32_t> eos_token_ids);

  // A request the scheduler took; its random draws follow from `seed`.
  RequestState& add_request(RequestId id, Request request, std::shared_ptr<OutputStream> stream,
                            uint64_t seed);
  // A request that could not start: its stream ends with `error`.
  static void reject(const Request& request, OutputStream& stream, const Status& error);
  RequestState& request(RequestId id) { return *requests_.at(id); }
  // The sample's state, made at its first draw.
  SeqState& seq(scheduler::SeqId id, RequestId request, int index);
  const std::vector<int32_t>& eos_token_ids() const { return eos_token_ids_; }

  // A prefill chunk of `s` ran in the step that began at `step_start`: the request's queue time
  // ends, and its first chunk counts the prompt tokens the prefix cache served.
  void note_prefill_chunk(const scheduler::ScheduledSeq& s,
                          std::chrono::steady_clock::time_point step_start);
  // One drawn token of sample `st` (sequence `seq`), with its logprob when asked: counts, stop
  // conditions and the streamed chunk, into `out` for the scheduler.
  void process_token(SeqState& st, scheduler::SeqId seq, int32_t token, const TokenLogprob* logprob,
                     scheduler::SeqOutput& out);
  // A sample ended: its last chunk (and the request's usage, from the KV it held, when it is
  // the request's last).
  void finish(const scheduler::FinishedSeq& finished, kvcache::KvManager& kv);

 private:
  void emit(SeqState& st, const scheduler::SeqOutput& sampled, const TokenLogprob* logprob);

  const models::Tokenizer* tokenizer_;
  std::vector<int32_t> eos_token_ids_;
  std::unordered_map<RequestId, std::unique_ptr<RequestState>> requests_;
  std::unordered_map<scheduler::SeqId, std::unique_ptr<SeqState>> seqs_;
};

}  // namespace sieve::engine
