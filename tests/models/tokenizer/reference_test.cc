// Sieve's tokenizers against Hugging Face `tokenizers` (and `sentencepiece`) on the committed
// corpus: ids, decoded text, and the incremental detokenizer, for every tokenizer kind.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "models/tokenizer/tokenizer.h"
#include "models/tokenizer/unicode.h"
#include "tests/models/tokenizer/reference_util.h"

namespace sieve::models {
namespace {

using testing::load_case;
using testing::reference_case;

class TokenizerReference : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    reference_ = reference_case(GetParam());
    if (reference_ == nullptr && GetParam() == "smollm2_real_gguf") {
      GTEST_SKIP() << "no " << testing::default_gguf_path();
    }
    ASSERT_NE(reference_, nullptr) << "no reference case " << GetParam();
    auto tokenizer = load_case(*reference_);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(tokenizer).value();
  }

  const nlohmann::json* reference_ = nullptr;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_P(TokenizerReference, EncodesAsHuggingFace) {
  for (const auto& e : (*reference_)["encode"]) {
    const std::string text = e["text"];
    SCOPED_TRACE("text: " + text);
    EXPECT_EQ(tokenizer_->encode(text, false), e["ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(tokenizer_->encode(text, true), e["ids_special"].get<std::vector<int32_t>>());
  }
}

TEST_P(TokenizerReference, EncodesAsSentencePieceWithoutSpecialTokensInText) {
  if (!reference_->contains("sentencepiece_ids")) GTEST_SKIP() << "not a tokenizer.model case";
  const auto& encode = (*reference_)["encode"];
  const auto& expected = (*reference_)["sentencepiece_ids"];
  for (size_t i = 0; i < encode.size(); ++i) {
    const std::string text = encode[i]["text"];
    if (text.find("<s>") != std::string::npos) continue;  // sentencepiece does not parse those
    SCOPED_TRACE("text: " + text);
    EXPECT_EQ(tokenizer_->encode(text, false), expected[i].get<std::vector<int32_t>>());
  }
}

TEST_P(TokenizerReference, DecodesAsHuggingFace) {
  for (const auto& d : (*reference_)["decode"]) {
    const auto ids = d["ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE("ids: " + d["ids"].dump());
    EXPECT_EQ(tokenizer_->decode(ids, false), d["text"].get<std::string>());
    EXPECT_EQ(tokenizer_->decode(ids, true), d["text_skip"].get<std::string>());
  }
}

TEST_P(TokenizerReference, IncrementalDeltasAreValidUtf8AndConcatenateToDecode) {
  for (const auto& d : (*reference_)["decode"]) {
    const auto ids = d["ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE("ids: " + d["ids"].dump());
    for (const bool skip : {false, true}) {
      auto detokenizer = tokenizer_->make_detokenizer(skip);
      std::string text;
      for (const int32_t id : ids) {
        const std::string delta = detokenizer->feed(id);
        EXPECT_TRUE(unicode::is_valid_utf8(delta)) << "after id " << id;
        text += delta;
      }
      const std::string rest = detokenizer->finish();
      EXPECT_TRUE(unicode::is_valid_utf8(rest));
      text += rest;
      EXPECT_EQ(text, tokenizer_->decode(ids, skip));
    }
  }
}

TEST_P(TokenizerReference, RoundTripsTextWithoutSpecialTokens) {
  for (const auto& e : (*reference_)["encode"]) {
    const std::string text = e["text"];
    const auto ids = tokenizer_->encode(text, false);
    // Byte-level BPE is lossless; SentencePiece may map rare characters to <unk>.
    bool has_unknown = false;
    for (const int32_t id : ids) has_unknown |= tokenizer_->token_text(id) == "<unk>";
    if (has_unknown) continue;
    const auto expected = e["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer_->decode(ids, false), tokenizer_->decode(expected, false)) << text;
  }
}

INSTANTIATE_TEST_SUITE_P(All, TokenizerReference,
                         ::testing::Values("gpt2", "gpt2_gguf", "llama3", "llama3_gguf", "qwen2",
                                           "qwen2_gguf", "smollm2", "smollm2_gguf", "spm_bpe",
                                           "spm_unigram", "spm_json_bpe_legacy",
                                           "spm_json_bpe_first", "spm_bpe_gguf",
                                           "smollm2_real_gguf"));

}  // namespace
}  // namespace sieve::models
