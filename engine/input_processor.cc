#include "engine/input_processor.h"

#include "core/field_error.h"

namespace sieve::engine {

Status check_token_id(int64_t id, size_t position, int vocab_size, const std::string& field) {
  if (id >= 0 && id < vocab_size) return OkStatus();
  return InvalidFieldError(field, field + ": token id " + std::to_string(id) + " at position " +
                                      std::to_string(position) + " is outside the vocabulary [0, " +
                                      std::to_string(vocab_size) + ")");
}

Status check_request(std::span<const int32_t> prompt, const SamplingParams& params,
                     const InputLimits& limits, const RequestFields& fields) {
  if (Status valid = validate(params); !valid.ok()) {
    // validate() names the engine's field; an API that calls it otherwise gets its own name.
    if (error_field(valid) != "max_tokens" || fields.max_tokens == "max_tokens") return valid;
    const std::string message(valid.message());
    return InvalidFieldError(fields.max_tokens,
                             fields.max_tokens + message.substr(std::string("max_tokens").size()));
  }
  const std::string& prompt_field = fields.prompt;
  if (prompt.empty())
    return InvalidFieldError(prompt_field, prompt_field + ": the prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    RETURN_IF_ERROR(check_token_id(prompt[i], i, limits.vocab_size, prompt_field));
  }
  for (size_t i = 0; i < params.stop_token_ids.size(); ++i) {
    RETURN_IF_ERROR(
        check_token_id(params.stop_token_ids[i], i, limits.vocab_size, "stop_token_ids"));
  }
  const int len = static_cast<int>(prompt.size());
  const int context = limits.max_model_len;
  if (len >= context) {
    return InvalidFieldError(prompt_field, prompt_field + ": the prompt has " +
                                               std::to_string(len) +
                                               " tokens and does not fit the model's context of " +
                                               std::to_string(context) + " tokens");
  }
  // Subtraction form: len < context here, so nothing overflows (max_tokens may be INT32_MAX).
  if (params.max_tokens > context - len) {
    return InvalidFieldError(fields.max_tokens, fields.max_tokens + ": " +
                                                    std::to_string(params.max_tokens) +
                                                    " tokens plus the " + std::to_string(len) +
                                                    "-token prompt exceed the model's context of " +
                                                    std::to_string(context) + " tokens");
  }
  if (limits.max_num_seqs > 0 && params.n > limits.max_num_seqs) {
    return InvalidFieldError("n", "n: " + std::to_string(params.n) + " exceeds max_num_seqs " +
                                      std::to_string(limits.max_num_seqs));
  }
  return OkStatus();
}

}  // namespace sieve::engine
