// The Tokenizer API around the ids: special ids, stop tokens, configs, errors, threads.

#include "models/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "models/tokenizer/chat_template.h"
#include "tests/models/tokenizer/reference_util.h"

namespace sieve::models {
namespace {

namespace fs = std::filesystem;
using testing::load_case;
using testing::reference_case;

std::unique_ptr<Tokenizer> load(const std::string& name) {
  const nlohmann::json* c = reference_case(name);
  if (c == nullptr) return nullptr;
  auto tokenizer = load_case(*c);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(tokenizer).value() : nullptr;
}

TEST(Tokenizer, ReadsBosEosStopIdsAndTemplateFromHfConfigs) {
  const auto tokenizer = load("llama3");
  ASSERT_NE(tokenizer, nullptr);
  const int32_t bos = *tokenizer->token_to_id("<|begin_of_text|>");
  const int32_t eot = *tokenizer->token_to_id("<|eot_id|>");
  const int32_t end_of_text = *tokenizer->token_to_id("<|endoftext|>");
  const int32_t im_end = *tokenizer->token_to_id("<|im_end|>");
  EXPECT_EQ(tokenizer->bos_id(), bos);
  EXPECT_EQ(tokenizer->eos_id(), eot);
  std::vector<int32_t> stops = {eot, end_of_text, im_end};
  std::sort(stops.begin(), stops.end());
  EXPECT_EQ(tokenizer->stop_token_ids(), stops);
  EXPECT_TRUE(tokenizer->is_special(bos));
  EXPECT_FALSE(tokenizer->is_special(*tokenizer->token_to_id("<mask>")));
  EXPECT_EQ(tokenizer->token_text(bos), "<|begin_of_text|>");
  EXPECT_EQ(tokenizer->token_text(-1), "");
  EXPECT_EQ(tokenizer->token_text(tokenizer->vocab_size()), "");
  const ChatTemplate chat = chat_template_for(*tokenizer, "llama");
  EXPECT_EQ(chat.kind, ChatTemplateKind::kLlama3);
  EXPECT_TRUE(chat.llama3_date_header);
  EXPECT_EQ(tokenizer->encode("hi", true).front(), bos);
}

TEST(Tokenizer, SentencePieceFollowsTokenizerConfigForBosAndEos) {
  const auto tokenizer = load("spm_unigram");  // its tokenizer_config.json sets add_eos_token
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  const auto ids = tokenizer->encode("Hello", true);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(tokenizer->stop_token_ids(), std::vector<int32_t>({2}));
  const auto user = tokenizer->token_to_id("<|user|>");
  ASSERT_TRUE(user.has_value());
  EXPECT_TRUE(tokenizer->is_special(*user));
  EXPECT_EQ(tokenizer->decode(std::vector<int32_t>{*user}, true), "");
}

TEST(Tokenizer, DefaultGgufChatEncodesAsHuggingFace) {
  const nlohmann::json* c = reference_case("smollm2_real_gguf");
  if (c == nullptr) GTEST_SKIP() << "no " << testing::default_gguf_path();
  auto tokenizer = load_case(*c);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Tokenizer& t = **tokenizer;
  EXPECT_EQ(t.vocab_size(), 49152);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.stop_token_ids(), std::vector<int32_t>({0, 2}));  // <|endoftext|>, <|im_end|>
  std::vector<ChatMessage> messages;
  for (const auto& m : (*c)["chat"]["messages"]) messages.push_back({m["role"], m["content"]});
  const ChatTemplate chat = chat_template_for(t, "llama");
  EXPECT_EQ(chat.kind, ChatTemplateKind::kChatML);
  const auto prompt = apply_chat_template(chat, messages, true);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(t.encode(*prompt, false), (*c)["chat"]["ids"].get<std::vector<int32_t>>());
}

TEST(Tokenizer, EncodesTheSameFromManyThreads) {
  const auto tokenizer = load("qwen2");
  ASSERT_NE(tokenizer, nullptr);
  const nlohmann::json* c = reference_case("qwen2");
  std::vector<std::thread> threads;
  std::atomic<int> mismatches = 0;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 5; ++round) {
        for (const auto& e : (*c)["encode"]) {
          if (tokenizer->encode(e["text"].get<std::string>(), false) !=
              e["ids"].get<std::vector<int32_t>>()) {
            ++mismatches;
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches, 0);
}

TEST(Tokenizer, SentencePieceContinuationKeepsTheLeadingSpace) {
  const auto tokenizer = load("spm_bpe");
  ASSERT_NE(tokenizer, nullptr);
  const auto prompt = tokenizer->encode("The capital of France is", true);
  const auto answer = tokenizer->encode("Paris", false);  // "▁Paris" (dummy prefix)
  auto fresh = tokenizer->make_detokenizer(true);
  std::string alone;
  for (const int32_t id : answer) alone += fresh->feed(id);
  EXPECT_EQ(alone + fresh->finish(), "Paris");  // as decode(answer) gives it
  auto continued = tokenizer->make_detokenizer(true, prompt);
  std::string text;
  for (const int32_t id : answer) text += continued->feed(id);
  EXPECT_EQ(text + continued->finish(), " Paris");
}

TEST(Tokenizer, RepairsInvalidUtf8BeforeEncoding) {
  const auto tokenizer = load("gpt2");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->encode("a\xff"
                              "b\xe4\xbd",
                              false),
            tokenizer->encode("a\uFFFDb\uFFFD", false));
}

// A scratch Hugging Face directory with the given files.
class HfDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sieve_tok_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  Status load_status() { return load_tokenizer_from_hf_dir(dir_.string()).status(); }
  // A minimal valid tokenizer.json with `model` and `extra` spliced in.
  static std::string tokenizer_json(const std::string& model, const std::string& extra = "") {
    return R"({"added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "ByteLevel",
      "add_prefix_space": false, "use_regex": true}, "post_processor": null,
      "decoder": {"type": "ByteLevel"}, "model": )" +
           model + extra + "}";
  }
  static constexpr const char* kModel =
      R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";

  fs::path dir_;
};

void expect_error(const Status& status, absl::StatusCode code,
                  std::initializer_list<std::string> parts) {
  EXPECT_EQ(status.code(), code) << status;
  for (const std::string& part : parts) {
    EXPECT_NE(std::string(status.message()).find(part), std::string::npos)
        << "'" << part << "' not in: " << status;
  }
}

TEST_F(HfDir, LoadsAMinimalTokenizerJson) {
  write("tokenizer.json", tokenizer_json(kModel));
  auto tokenizer = load_tokenizer_from_hf_dir(dir_.string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->encode("abba", false), std::vector<int32_t>({2, 1, 0}));
  EXPECT_EQ((*tokenizer)->decode(std::vector<int32_t>{2, 1}, false), "abb");
}

TEST_F(HfDir, MissingDirectoryAndFilesAreNotFound) {
  expect_error(load_tokenizer_from_hf_dir((dir_ / "nope").string()).status(),
               absl::StatusCode::kNotFound, {"nope"});
  expect_error(load_status(), absl::StatusCode::kNotFound, {"tokenizer.json", "tokenizer.model"});
}

TEST_F(HfDir, MalformedJsonNamesTheFile) {
  write("tokenizer.json", "{\"model\": [");
  expect_error(load_status(), absl::StatusCode::kInvalidArgument, {"tokenizer.json", "JSON"});
}

TEST_F(HfDir, BadFieldsNameTheFileAndField) {
  write("tokenizer.json",
        tokenizer_json(R"({"type": "BPE", "vocab": {"a": "zero"}, "merges": []})"));
  expect_error(load_status(), absl::StatusCode::kInvalidArgument,
               {"tokenizer.json", "model.vocab.a", "token id"});
  write("tokenizer.json", tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0}, "merges": [3]})"));
  expect_error(load_status(), absl::StatusCode::kInvalidArgument,
               {"tokenizer.json", "model.merges[0]"});
  write("tokenizer.json",
        tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]})"));
  expect_error(load_status(), absl::StatusCode::kInvalidArgument,
               {"tokenizer.json", "model.merges", "'c' is not in the vocabulary"});
  write("tokenizer.json", tokenizer_json(kModel, R"(, "added_tokens": [{"id": 5, "content": 7}])"));
  expect_error(load_status(), absl::StatusCode::kInvalidArgument,
               {"tokenizer.json", "added_tokens[0].content", "string"});
  write("tokenizer.json", tokenizer_json(R"({"type": "Unigram", "vocab": []})"));
  expect_error(load_status(), absl::StatusCode::kUnimplemented, {"tokenizer.json", "model.type"});
  write("tokenizer.json", tokenizer_json(kModel, R"(, "normalizer": {"type": "BertNormalizer"})"));
  expect_error(load_status(), absl::StatusCode::kUnimplemented,
               {"tokenizer.json", "normalizer.type", "BertNormalizer"});
  write("tokenizer.json",
        tokenizer_json(kModel, R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "("},
                                  "behavior": "Isolated", "invert": false})"));
  expect_error(load_status(), absl::StatusCode::kInvalidArgument,
               {"tokenizer.json", "pre_tokenizer.pattern.Regex"});
}

TEST_F(HfDir, BadConfigFilesNameTheFileAndField) {
  write("tokenizer.json", tokenizer_json(kModel));
  write("tokenizer_config.json", R"({"add_bos_token": "yes"})");
  expect_error(load_status(), absl::StatusCode::kInvalidArgument,
               {"tokenizer_config.json", "add_bos_token", "boolean"});
  write("tokenizer_config.json", R"({"chat_template": 3})");
  expect_error(load_status(), absl::StatusCode::kInvalidArgument,
               {"tokenizer_config.json", "chat_template"});
  write("tokenizer_config.json", "{}");
  write("generation_config.json", R"({"eos_token_id": [1, -2]})");
  expect_error(load_status(), absl::StatusCode::kInvalidArgument,
               {"generation_config.json", "eos_token_id[1]"});
}

TEST_F(HfDir, CorruptSentencePieceModelNamesTheFile) {
  write("tokenizer.model", "\x0a\xff\xff not a proto");
  expect_error(load_status(), absl::StatusCode::kInvalidArgument, {"tokenizer.model"});
}

TEST(Vocab, UnsupportedGgufVocabulariesNameTheField) {
  VocabData vocab;
  vocab.model = "bert";
  vocab.tokens = {"a"};
  expect_error(load_tokenizer_from_vocab(vocab).status(), absl::StatusCode::kUnimplemented,
               {"tokenizer.ggml.model", "bert"});
  vocab.model = "gpt2";
  vocab.pre = "deepseek-coder";
  expect_error(load_tokenizer_from_vocab(vocab).status(), absl::StatusCode::kUnimplemented,
               {"tokenizer.ggml.pre", "deepseek-coder"});
  vocab.pre = "gpt-2";
  vocab.merges = {"ab"};
  expect_error(load_tokenizer_from_vocab(vocab).status(), absl::StatusCode::kInvalidArgument,
               {"tokenizer.ggml.merges[0]"});
  vocab.model = "llama";
  vocab.scores = {};
  expect_error(load_tokenizer_from_vocab(vocab).status(), absl::StatusCode::kInvalidArgument,
               {"tokenizer.ggml.scores"});
  vocab.scores = {0.0f};
  vocab.bos_id = 7;
  expect_error(load_tokenizer_from_vocab(vocab).status(), absl::StatusCode::kInvalidArgument,
               {"tokenizer.ggml.bos_token_id", "7"});
}

}  // namespace
}  // namespace sieve::models
