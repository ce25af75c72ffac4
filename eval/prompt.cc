#include "eval/prompt.h"

namespace sieve::eval {

StatusOr<TaskPrompt> render_prompt(TaskSample sample, const models::ChatTemplate& chat_template,
                                   const models::Tokenizer& tokenizer) {
  // A marker the generators never write, cut out after rendering.
  static constexpr std::string_view kMarker = "\x01SIEVE_QUESTION\x01";
  std::vector<models::ChatMessage> messages;
  if (!sample.system.empty()) messages.push_back({"system", sample.system});
  messages.push_back({"user", sample.context + "\n\n" + std::string(kMarker) + sample.question});
  ASSIGN_OR_RETURN(std::string text, models::apply_chat_template(chat_template, messages,
                                                                 /*add_generation_prompt=*/true));
  const size_t at = text.find(kMarker);
  if (at == std::string::npos) return InternalError("chat template dropped the question marker");
  const std::string before = text.substr(0, at), after = text.substr(at + kMarker.size());
  TaskPrompt p;
  // The template writes BOS itself where the model wants one.
  p.token_ids = tokenizer.encode(before, /*add_special_tokens=*/false);
  p.context_tokens = static_cast<int>(p.token_ids.size());
  const std::vector<int32_t> rest = tokenizer.encode(after, /*add_special_tokens=*/false);
  p.token_ids.insert(p.token_ids.end(), rest.begin(), rest.end());
  p.text = before + after;
  if (!sample.system.empty()) {
    p.system_tokens =
        models::system_prompt_length(chat_template, tokenizer, sample.system, p.token_ids);
  }
  p.sample = std::move(sample);
  return p;
}

}  // namespace sieve::eval
