#pragma once
// Input processing: every check a request gets before it reaches the scheduler, written once.
// The servers run it while parsing (a call with several prompts fails before any starts, and the
// error names the field as their API spells it) and Engine::add_request runs it again for every
// caller (the CLI, benchmarks, tests). Each error is INVALID_ARGUMENT carrying its field as data
// (core/field_error.h).

#include <cstdint>
#include <span>
#include <string>

#include "core/status.h"
#include "engine/request.h"
#include "engine/sampling_params.h"

namespace sieve::engine {

// What requests are checked against.
struct InputLimits {
  int vocab_size = 0;
  int max_model_len = 0;  // prompt plus max_tokens must fit
  int max_num_seqs = 0;   // the most samples (n) a request may ask for; 0: unchecked
};

// The names the caller's API gives the fields an error can be about.
struct RequestFields {
  std::string prompt = "prompt";
  std::string max_tokens = "max_tokens";  // chat: max_completion_tokens when that was sent
};

// One token id of `field` at `position` inside the vocabulary.
Status check_token_id(int64_t id, size_t position, int vocab_size, const std::string& field);

// The prompt (token ids), the sampling parameters (validate()) and stop_token_ids, the prompt
// with max_tokens against the context, and n against the step.
Status check_request(std::span<const int32_t> prompt, const SamplingParams& params,
                     const InputLimits& limits, const RequestFields& fields = {});
inline Status check_request(const Request& r, const InputLimits& limits,
                            const RequestFields& fields = {}) {
  return check_request(r.prompt_token_ids, r.params, limits, fields);
}

}  // namespace sieve::engine
