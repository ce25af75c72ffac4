#pragma once
// Added tokens (special tokens such as <|im_start|>, and user-added ones) and how Hugging Face
// finds them in text before the model sees it: leftmost-longest match, with the single_word,
// lstrip and rstrip options of tokenizer.json's added_tokens.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sieve::models {

// One entry of tokenizer.json's added_tokens (GGUF control tokens become special ones).
struct AddedToken {
  AddedToken() = default;
  // A token as GGUF and SentencePiece models define them: no stripping, matched in raw text.
  AddedToken(int32_t id, std::string content, bool special)
      : id(id), content(std::move(content)), special(special) {}

  int32_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;  // matched in the normalized text rather than the raw text
  bool special = false;     // skipped by decode(skip_special_tokens = true)
};

// A span of text, either plain text (id < 0) or an added token (with the whitespace that its
// lstrip/rstrip options absorbed).
struct TextSpan {
  size_t begin = 0;
  size_t end = 0;
  int32_t id = -1;
};

// Finds added tokens in text. Immutable after construction, so safe to share between threads.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `tokens` are the ones to match; `patterns[i]` is the text that finds tokens[i] (its content,
  // or its normalized content for the normalized set).
  AddedTokenMatcher(std::vector<AddedToken> tokens, std::vector<std::string> patterns);

  bool empty() const { return tokens_.empty(); }
  // Appends spans covering all of `text`, as HF's AddedVocabulary::find_matches does.
  void split(std::string_view text, std::vector<TextSpan>* spans) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
    int32_t token = -1;                                 // index into tokens_ ending here
  };
  // Longest token index matching at `pos`, and its length; -1 when none.
  int32_t longest_match(std::string_view text, size_t pos, size_t* length) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
};

}  // namespace sieve::models
