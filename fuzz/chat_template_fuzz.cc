// libFuzzer target over the chat template renderer: arbitrary conversations through each
// template family and variant Sieve renders (ChatML with and without a default system prompt,
// Llama 3 with and without the date header, Llama 2, Mistral v0.1/v0.2/v0.3), and arbitrary
// Jinja sources through detect_chat_template. Rendering gives text or an INVALID_ARGUMENT:
// never a crash, an ASan or UBSan report or another code; it is deterministic, and the text is
// valid UTF-8 whenever every input was. (It may be empty: Llama 2's template renders a lone
// system message as nothing.)
//
// Input: byte 0 picks the template (below 9: a fixed variant; else the first field is a Jinja
// source and the second an architecture hint for detect_chat_template); byte 1's low bit is
// add_generation_prompt; the rest is '\0'-separated fields: role, content, role, content, ...
//
// Build and run (clang; see fuzz/README.md):
//   cmake --build build-fuzz -j2 --target chat_template_fuzz
//   build-fuzz/fuzz/chat_template_fuzz -dict=fuzz/dict/chat_template.dict -max_len=4096 \
//       -timeout=10 /tmp/chat_corpus fuzz/corpus/chat_template

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/unicode.h"
#include "spdlog/spdlog.h"

namespace {

using sieve::models::ChatMessage;
using sieve::models::ChatTemplate;
using sieve::models::detect_chat_template;

// Sources with the markers detect_chat_template reads, one per variant (the real templates are
// compared with jinja2 in tests/models/tokenizer).
constexpr std::array<std::string_view, 9> kVariantSources = {
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}",
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI "
    "assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}<|im_start|>",
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>",
    "<|start_header_id|>Cutting Knowledge Date: December 2023\\nToday Date: \" + date_string "
    "date_string = \"26 Jul 2024\"",
    "[INST] <<SYS>>\\n{{ system }}\\n<</SYS>>\\n\\n",
    "{{ bos_token }}{% for message in messages %}{{ '[INST] ' + message['content'] + ' [/INST]' "
    "}}{% else %}{{ message['content'] + eos_token}}",
    "{{ bos_token }}{% set system_message = messages[0]['content'] %}{{ '[INST] ' + "
    "message['content'] + ' [/INST]' }}{{ ' ' + message['content'] + eos_token}}",
    "{%- if loop.last and system_message is defined %}{{- '[INST] ' + system_message }}[/INST]"
    "{{- ' ' + message['content']|trim + eos_token}}",
    "",  // the architecture hint decides: mistral
};

bool valid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const auto step = sieve::models::unicode::decode_utf8(text, pos);
    if (step.kind != sieve::models::unicode::Utf8Step::kValid) return false;
    pos += step.length;
  }
  return true;
}

std::vector<std::string_view> split_fields(std::string_view rest) {
  std::vector<std::string_view> fields;
  while (!rest.empty() && fields.size() < 64) {
    const size_t end = rest.find('\0');
    fields.push_back(rest.substr(0, end));
    if (end == std::string_view::npos) break;
    rest.remove_prefix(end + 1);
  }
  return fields;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // "unrecognised chat template" for most sources
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);
  const bool add_generation_prompt = data[1] & 1;
  std::vector<std::string_view> fields = split_fields(rest);
  bool all_valid = true;
  for (std::string_view field : fields) all_valid = all_valid && valid_utf8(field);
  ChatTemplate chat_template;
  if (data[0] < kVariantSources.size()) {
    chat_template = detect_chat_template(kVariantSources[data[0]], data[0] == 8 ? "mistral" : "");
  } else {
    if (fields.size() < 2) return 0;
    chat_template = detect_chat_template(fields[0], fields[1]);
    fields.erase(fields.begin(), fields.begin() + 2);
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    messages.push_back({std::string(fields[i]), std::string(fields[i + 1])});
  }
  const auto rendered =
      sieve::models::apply_chat_template(chat_template, messages, add_generation_prompt);
  const auto again =
      sieve::models::apply_chat_template(chat_template, messages, add_generation_prompt);
  SIEVE_CHECK(rendered.ok() == again.ok());
  if (!rendered.ok()) {
    SIEVE_CHECK(rendered.status().code() == absl::StatusCode::kInvalidArgument)
        << rendered.status();
    SIEVE_CHECK(!rendered.status().message().empty());
    return 0;
  }
  SIEVE_CHECK(*rendered == *again);
  if (all_valid) SIEVE_CHECK(valid_utf8(*rendered)) << *rendered;
  return 0;
}
