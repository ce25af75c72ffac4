#include "models/tokenizer/chat_template.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ctime>

#include "models/tokenizer/tokenizer.h"
#include "models/tokenizer/unicode.h"

namespace sieve::models {
namespace {

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// Python's str.isspace(), which Jinja's trim filter and str.strip() use.
bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Python's str.strip() on UTF-8 text.
std::string_view python_strip(std::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    const unicode::Utf8Step step = unicode::decode_utf8(text, begin);
    if (step.kind != unicode::Utf8Step::kValid || !is_python_space(step.code_point)) break;
    begin += step.length;
  }
  size_t end = text.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
    const unicode::Utf8Step step = unicode::decode_utf8(text, start);
    if (step.kind != unicode::Utf8Step::kValid || !is_python_space(step.code_point)) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

// Turns the "\n" escapes of a Jinja string literal into newlines.
std::string unescape_newlines(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] == 'n') {
      out.push_back('\n');
      ++i;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// The literal system prompt of a ChatML template, printed when the conversation has no system
// message: the first "<|im_start|>system\n<literal><|im_end|>" whose middle is plain text.
std::string chatml_default_system(std::string_view source) {
  constexpr std::string_view kStart = "<|im_start|>system";
  for (size_t pos = source.find(kStart); pos != std::string_view::npos;
       pos = source.find(kStart, pos + 1)) {
    std::string_view rest = source.substr(pos + kStart.size());
    if (rest.starts_with("\\n")) {
      rest.remove_prefix(2);
    } else if (rest.starts_with("\n")) {
      rest.remove_prefix(1);
    } else {
      continue;
    }
    const size_t end = rest.find("<|im_end|>");
    if (end == std::string_view::npos) continue;
    const std::string_view middle = rest.substr(0, end);
    if (middle.empty() || middle.find_first_of("'\"+{}") != std::string_view::npos) continue;
    return unescape_newlines(middle);
  }
  return "";
}

// The text after `marker` up to the end of its Jinja string literal.
std::string literal_after(std::string_view source, std::string_view marker) {
  const size_t pos = source.find(marker);
  if (pos == std::string_view::npos) return "";
  const std::string_view rest = source.substr(pos + marker.size());
  return std::string(rest.substr(0, rest.find_first_of("\\\"'\n")));
}

std::string today(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buffer[64];
  return std::string(buffer, std::strftime(buffer, sizeof(buffer), format, &local));
}

void detect_llama3(std::string_view source, ChatTemplate* t) {
  t->kind = ChatTemplateKind::kLlama3;
  t->bos_token = "<|begin_of_text|>";
  t->eos_token = "<|eot_id|>";
  if (!contains(source, "Cutting Knowledge Date")) return;
  t->llama3_date_header = true;
  t->knowledge_cutoff = literal_after(source, "Cutting Knowledge Date: ");
  // Llama 3.2 prints today's date where the runtime offers strftime_now; 3.1 a fixed one.
  t->today_date = contains(source, "strftime_now") ? today("%d %b %Y")
                                                   : literal_after(source, "date_string = \"");
}

void detect_mistral(std::string_view source, ChatTemplate* t) {
  t->kind = ChatTemplateKind::kMistral;
  t->bos_token = "<s>";
  t->eos_token = "</s>";
  if (contains(source, "' [INST] '") || contains(source, "\" [INST] \"")) t->inst_open = " [INST] ";
  if (!contains(source, "' [/INST]'") && !contains(source, "\" [/INST]\""))
    t->inst_close = "[/INST]";
  if (contains(source, "loop.last and system_message is defined")) {
    t->mistral_system = MistralSystem::kLastUser;
  } else if (contains(source, "system_message")) {
    t->mistral_system = MistralSystem::kFirstUser;
  }
  if (contains(source, "' ' + message['content']") ||
      contains(source, "\" \" + message[\"content\"]")) {
    t->assistant_prefix = " ";
  }
  t->trim_assistant = contains(source, "message[\"content\"]|trim + eos_token") ||
                      contains(source, "message['content']|trim + eos_token") ||
                      contains(source, "message['content'] | trim + eos_token");
  if (t->mistral_system != MistralSystem::kUnsupported) {
    t->alternation_error =
        "After the optional system message, conversation roles must alternate "
        "user/assistant/user/assistant/...";
    t->role_error =
        "Only user and assistant roles are supported, with the exception of an initial optional "
        "system message!";
  }
}

Status template_error(std::string_view message) {
  return InvalidArgumentError(fmt::format("chat template: {}", message));
}

StatusOr<std::string> render_chatml(const ChatTemplate& t, std::span<const ChatMessage> messages,
                                    bool add_generation_prompt) {
  std::string out;
  if (!t.default_system_prompt.empty() && messages.front().role != "system") {
    out += "<|im_start|>system\n" + t.default_system_prompt + "<|im_end|>\n";
  }
  for (const ChatMessage& m : messages) {
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

StatusOr<std::string> render_llama3(const ChatTemplate& t, std::span<const ChatMessage> messages,
                                    bool add_generation_prompt) {
  std::string out = t.bos_token;
  if (t.llama3_date_header) {
    std::string_view system;
    if (messages.front().role == "system") {
      system = python_strip(messages.front().content);
      messages = messages.subspan(1);
    }
    out += fmt::format(
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: {}\nToday Date: "
        "{}\n\n{}<|eot_id|>",
        t.knowledge_cutoff, t.today_date, system);
  }
  for (const ChatMessage& m : messages) {
    out += fmt::format("<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", m.role,
                       python_strip(m.content));
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// Llama 2's template ignores add_generation_prompt: a prompt ends with " [/INST]" anyway.
StatusOr<std::string> render_llama2(const ChatTemplate& t, std::span<const ChatMessage> messages) {
  const bool has_system = messages.front().role == "system";
  const std::string system = has_system ? messages.front().content : "";
  if (has_system) messages = messages.subspan(1);
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if ((m.role == "user") != (i % 2 == 0)) return template_error(t.alternation_error);
    const std::string content =
        i == 0 && has_system ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + m.content : m.content;
    if (m.role == "user") {
      out += fmt::format("{}[INST] {} [/INST]", t.bos_token, python_strip(content));
    } else if (m.role == "assistant") {
      out += fmt::format(" {} {}", python_strip(content), t.eos_token);
    }
  }
  return out;
}

// Mistral's templates ignore add_generation_prompt too.
StatusOr<std::string> render_mistral(const ChatTemplate& t, std::span<const ChatMessage> messages) {
  std::string system;
  bool has_system = false;
  if (t.mistral_system != MistralSystem::kUnsupported && messages.front().role == "system") {
    has_system = true;
    system = messages.front().content;
    messages = messages.subspan(1);
  }
  // v0.3 checks the alternation of all messages before rendering; earlier versions per message,
  // which decides the error a conversation gets.
  const bool check_first = t.mistral_system == MistralSystem::kLastUser;
  for (size_t i = 0; i < messages.size() && check_first; ++i) {
    if ((messages[i].role == "user") != (i % 2 == 0)) return template_error(t.alternation_error);
  }
  std::string out = t.bos_token;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (!check_first && (m.role == "user") != (i % 2 == 0)) {
      return template_error(t.alternation_error);
    }
    if (m.role == "user") {
      const bool with_system =
          has_system &&
          (t.mistral_system == MistralSystem::kFirstUser ? i == 0 : i + 1 == messages.size());
      out += t.inst_open + (with_system ? system + "\n\n" : "") + m.content + t.inst_close;
    } else if (m.role == "assistant") {
      out += t.assistant_prefix;
      out += t.trim_assistant ? python_strip(m.content) : std::string_view(m.content);
      out += t.eos_token;
    } else {
      return template_error(t.role_error);
    }
  }
  return out;
}

}  // namespace

ChatTemplate detect_chat_template(std::string_view jinja_source,
                                  std::string_view architecture_hint) {
  ChatTemplate t;
  if (contains(jinja_source, "<|im_start|>")) {
    t.default_system_prompt = chatml_default_system(jinja_source);
  } else if (contains(jinja_source, "<|start_header_id|>")) {
    detect_llama3(jinja_source, &t);
  } else if (contains(jinja_source, "[INST]")) {
    if (contains(jinja_source, "<<SYS>>")) {
      t.kind = ChatTemplateKind::kLlama2;
      t.bos_token = "<s>";
      t.eos_token = "</s>";
    } else {
      detect_mistral(jinja_source, &t);
    }
  } else if (jinja_source.empty() &&
             (contains(architecture_hint, "llama3") || contains(architecture_hint, "llama-3"))) {
    detect_llama3("", &t);
  } else if (jinja_source.empty() &&
             (contains(architecture_hint, "llama2") || contains(architecture_hint, "llama-2"))) {
    t.kind = ChatTemplateKind::kLlama2;
    t.bos_token = "<s>";
    t.eos_token = "</s>";
  } else if (jinja_source.empty() && contains(architecture_hint, "mistral")) {
    detect_mistral("", &t);
  } else if (!(jinja_source.empty() && contains(architecture_hint, "qwen"))) {
    spdlog::warn("unrecognised chat template (architecture '{}'); using ChatML", architecture_hint);
  }
  return t;
}

ChatTemplate chat_template_for(const Tokenizer& tokenizer, std::string_view architecture_hint) {
  ChatTemplate t = detect_chat_template(tokenizer.chat_template(), architecture_hint);
  if (const auto bos = tokenizer.bos_id(); bos && t.kind != ChatTemplateKind::kChatML) {
    t.bos_token = std::string(tokenizer.token_text(*bos));
  }
  if (const auto eos = tokenizer.eos_id();
      eos && t.kind != ChatTemplateKind::kChatML && t.kind != ChatTemplateKind::kLlama3) {
    t.eos_token = std::string(tokenizer.token_text(*eos));
  }
  return t;
}

StatusOr<std::string> apply_chat_template(const ChatTemplate& chat_template,
                                          std::span<const ChatMessage> messages,
                                          bool add_generation_prompt) {
  if (messages.empty()) return InvalidArgumentError("chat template: no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return InvalidArgumentError(fmt::format(
          "chat message {} has role '{}'; expected system, user or assistant", i, role));
    }
  }
  switch (chat_template.kind) {
    case ChatTemplateKind::kChatML:
      return render_chatml(chat_template, messages, add_generation_prompt);
    case ChatTemplateKind::kLlama3:
      return render_llama3(chat_template, messages, add_generation_prompt);
    case ChatTemplateKind::kLlama2:
      return render_llama2(chat_template, messages);
    case ChatTemplateKind::kMistral:
      return render_mistral(chat_template, messages);
  }
  return InternalError("unknown chat template kind");
}

int system_prompt_length(const ChatTemplate& chat_template, const Tokenizer& tokenizer,
                         const std::string& system, std::span<const int32_t> prompt) {
  const std::vector<ChatMessage> messages = {{"system", system}};
  auto text = apply_chat_template(chat_template, messages, /*add_generation_prompt=*/false);
  if (!text.ok()) return 0;
  const std::vector<int32_t> ids = tokenizer.encode(*text, /*add_special_tokens=*/false);
  if (ids.size() > prompt.size() || !std::equal(ids.begin(), ids.end(), prompt.begin())) return 0;
  return static_cast<int>(ids.size());
}

}  // namespace sieve::models
