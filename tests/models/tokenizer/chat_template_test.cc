// Chat templates against jinja2's rendering of the real templates (committed under fixtures/).

#include "models/tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/models/tokenizer/reference_util.h"

namespace sieve::models {
namespace {

using testing::fixture_path;
using testing::read_text;

std::vector<ChatMessage> messages_from_json(const nlohmann::json& list) {
  std::vector<ChatMessage> messages;
  for (const auto& m : list) messages.push_back({m["role"], m["content"]});
  return messages;
}

TEST(ChatTemplate, RendersAsJinjaOnTheRealTemplates) {
  const nlohmann::json* index = testing::references();
  ASSERT_NE(index, nullptr);
  const nlohmann::json spec =
      nlohmann::json::parse(read_text(fixture_path("fixtures/conversations.json")));
  const auto& conversations = spec["conversations"];
  ASSERT_EQ(spec["templates"].size(), (*index)["chat"].size());
  for (size_t t = 0; t < spec["templates"].size(); ++t) {
    const auto& info = spec["templates"][t];
    const std::string file = info["file"];
    SCOPED_TRACE("template " + file);
    ChatTemplate chat_template =
        detect_chat_template(read_text(fixture_path("fixtures/chat_templates/" + file)), "");
    chat_template.bos_token = info["bos_token"];
    chat_template.eos_token = info["eos_token"];
    const auto& results = (*index)["chat"][t]["results"];
    for (size_t c = 0; c < conversations.size(); ++c) {
      SCOPED_TRACE("conversation " + conversations[c]["name"].get<std::string>());
      const auto rendered =
          apply_chat_template(chat_template, messages_from_json(conversations[c]["messages"]),
                              conversations[c]["add_generation_prompt"]);
      if (results[c].contains("error")) {
        ASSERT_FALSE(rendered.ok()) << *rendered;
        EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument);
        EXPECT_NE(
            std::string(rendered.status().message()).find(results[c]["error"].get<std::string>()),
            std::string::npos)
            << rendered.status();
      } else {
        ASSERT_TRUE(rendered.ok()) << rendered.status();
        EXPECT_EQ(*rendered, results[c]["text"].get<std::string>());
      }
    }
  }
}

TEST(ChatTemplate, DetectsFamiliesAndVariants) {
  auto detect = [](const std::string& file) {
    return detect_chat_template(read_text(fixture_path("fixtures/chat_templates/" + file)), "");
  };
  const ChatTemplate smollm = detect("smollm2_instruct.jinja");
  EXPECT_EQ(smollm.kind, ChatTemplateKind::kChatML);
  EXPECT_EQ(smollm.default_system_prompt,
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  const ChatTemplate qwen = detect("qwen2.5_instruct.jinja");
  EXPECT_EQ(qwen.kind, ChatTemplateKind::kChatML);
  EXPECT_EQ(qwen.default_system_prompt,
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  const ChatTemplate llama31 = detect("llama3.1_instruct.jinja");
  EXPECT_EQ(llama31.kind, ChatTemplateKind::kLlama3);
  EXPECT_TRUE(llama31.llama3_date_header);
  EXPECT_EQ(llama31.knowledge_cutoff, "December 2023");
  EXPECT_EQ(llama31.today_date, "26 Jul 2024");
  EXPECT_FALSE(detect("llama3_instruct.jinja").llama3_date_header);
  EXPECT_EQ(detect("llama2_chat.jinja").kind, ChatTemplateKind::kLlama2);
  EXPECT_EQ(detect("mistral_7b_instruct_v0.1.jinja").mistral_system, MistralSystem::kUnsupported);
  EXPECT_EQ(detect("mistral_7b_instruct_v0.2.jinja").mistral_system, MistralSystem::kFirstUser);
  EXPECT_EQ(detect("mistral_7b_instruct_v0.3.jinja").mistral_system, MistralSystem::kLastUser);
}

TEST(ChatTemplate, UnknownTemplateFallsBackToPlainChatML) {
  const ChatTemplate t = detect_chat_template("{{ messages }}", "gpt-neox");
  EXPECT_EQ(t.kind, ChatTemplateKind::kChatML);
  EXPECT_EQ(t.default_system_prompt, "");
  const std::vector<ChatMessage> messages = {{"user", "hi"}};
  EXPECT_EQ(*apply_chat_template(t, messages, true),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, ArchitectureHintDecidesWithoutATemplate) {
  EXPECT_EQ(detect_chat_template("", "llama3").kind, ChatTemplateKind::kLlama3);
  EXPECT_EQ(detect_chat_template("", "llama2").kind, ChatTemplateKind::kLlama2);
  EXPECT_EQ(detect_chat_template("", "mistral").kind, ChatTemplateKind::kMistral);
  EXPECT_EQ(detect_chat_template("", "qwen2").kind, ChatTemplateKind::kChatML);
}

TEST(ChatTemplate, RejectsAnUnknownRoleByName) {
  const std::vector<ChatMessage> messages = {{"user", "hi"}, {"tool", "42"}};
  for (const auto kind : {ChatTemplateKind::kChatML, ChatTemplateKind::kLlama3,
                          ChatTemplateKind::kLlama2, ChatTemplateKind::kMistral}) {
    ChatTemplate t;
    t.kind = kind;
    const auto rendered = apply_chat_template(t, messages, true);
    ASSERT_FALSE(rendered.ok());
    EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(rendered.status().message().find("'tool'"), absl::string_view::npos)
        << rendered.status();
  }
}

TEST(ChatTemplate, RejectsAnEmptyConversation) {
  EXPECT_FALSE(apply_chat_template(ChatTemplate(), {}, true).ok());
}

}  // namespace
}  // namespace sieve::models
