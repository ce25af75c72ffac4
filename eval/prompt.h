#pragma once
// A task sample through the model's chat template into token ids, with the boundary between the
// context and the question kept, so that the agnostic protocol can compress the context first.

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "eval/tasks.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"

namespace sieve::eval {

struct TaskPrompt {
  TaskSample sample;
  std::string text;                // the rendered conversation
  std::vector<int32_t> token_ids;  // what the engine is given
  // token_ids[0, context_tokens) end with the context: the system message and the user turn up
  // to the question. token_ids[context_tokens, end) are the question and the assistant header.
  int context_tokens = 0;
  // token_ids[0, system_tokens) are the system message (0 without one): protected from eviction
  // by default (the Pitfalls protection).
  int system_tokens = 0;
};

// Renders system + user("<context>\n\n<question>") with the generation prompt. The two sides of
// the boundary are encoded separately and concatenated, so the boundary falls between tokens
// (the ids may differ from encoding the whole text at once at that one place; every run and
// --dump-prompts use these ids).
StatusOr<TaskPrompt> render_prompt(TaskSample sample, const models::ChatTemplate& chat_template,
                                   const models::Tokenizer& tokenizer);

}  // namespace sieve::eval
