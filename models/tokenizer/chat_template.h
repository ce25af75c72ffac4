#pragma once
// Chat templates: the prompt text a chat model expects for a conversation, for the template
// families Sieve serves, written out in C++ instead of run through a Jinja interpreter. Each
// renders exactly what the model's own Jinja template renders (tests compare with jinja2 on the
// real templates); detect_chat_template() reads the family and its variant parameters from the
// template's source.

#include <span>
#include <string>
#include <string_view>

#include "core/status.h"

namespace sieve::models {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

enum class ChatTemplateKind {
  kChatML,   // <|im_start|>role\n...<|im_end|>\n (Qwen2, SmolLM2)
  kLlama3,   // <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
  kLlama2,   // <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] ... </s>
  kMistral,  // <s>[INST] ... [/INST] ...</s>
};

// Where a Mistral template puts the system message.
enum class MistralSystem {
  kUnsupported,  // v0.1: a system message breaks role alternation
  kFirstUser,    // v0.2: prefixed to the first user message
  kLastUser,     // v0.3: prefixed to the last message, when that is a user message
};

// A template family and what varies between its versions.
struct ChatTemplate {
  ChatTemplateKind kind = ChatTemplateKind::kChatML;
  std::string bos_token;  // as the template prints it (Llama 2/3, Mistral)
  std::string eos_token;  // as the template prints it (Llama 2, Mistral)
  // ChatML: the system message used when the conversation has none (empty: none).
  std::string default_system_prompt;
  // Llama 3.1+: a system header with "Cutting Knowledge Date" and "Today Date" always comes first.
  bool llama3_date_header = false;
  std::string knowledge_cutoff;  // "December 2023"
  std::string today_date;        // "26 Jul 2024"
  // Mistral versions.
  MistralSystem mistral_system = MistralSystem::kUnsupported;
  std::string inst_open = "[INST] ";
  std::string inst_close = " [/INST]";
  std::string assistant_prefix;  // before an assistant reply: "" (v0.1) or " "
  bool trim_assistant = false;   // v0.3 trims assistant replies
  std::string alternation_error =
      "Conversation roles must alternate user/assistant/user/assistant/...";
  std::string role_error = "Only user and assistant roles are supported!";
};

// Reads the family and variant from a Jinja template's source by its markers ("<|im_start|>",
// "<|start_header_id|>", "[INST]" with or without "<<SYS>>"). With no template, the
// architecture hint ("qwen2", "llama", "mistral", ...) decides; anything unrecognised is ChatML
// without a default system prompt, with a warning in the log. BOS/EOS texts get the family's
// usual values; set them from the tokenizer when it has others.
ChatTemplate detect_chat_template(std::string_view jinja_source,
                                  std::string_view architecture_hint);

// detect_chat_template() on the tokenizer's own template, with its BOS/EOS texts.
ChatTemplate chat_template_for(const Tokenizer& tokenizer, std::string_view architecture_hint);

// Renders `messages`; add_generation_prompt opens the assistant's turn where the family has a
// marker for it. A role other than system/user/assistant is an InvalidArgument naming it; so is
// a conversation the model's template rejects (with the template's own message), and an empty one.
StatusOr<std::string> apply_chat_template(const ChatTemplate& chat_template,
                                          std::span<const ChatMessage> messages,
                                          bool add_generation_prompt);

class Tokenizer;

// The tokens that open `prompt` and are the system message `system` as the template renders it
// alone (its turn ends in a special token, so nothing merges across it), or 0 when they do not.
// Requests protect these from KV eviction.
int system_prompt_length(const ChatTemplate& chat_template, const Tokenizer& tokenizer,
                         const std::string& system, std::span<const int32_t> prompt);

}  // namespace sieve::models
