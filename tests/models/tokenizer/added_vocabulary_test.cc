// Added-token matching, on the cases Hugging Face's added_vocabulary.rs documents in its tests.

#include "models/tokenizer/added_vocabulary.h"

#include <gtest/gtest.h>

namespace sieve::models {
namespace {

AddedToken token(int32_t id, std::string content) {
  AddedToken t;
  t.id = id;
  t.content = std::move(content);
  return t;
}

AddedTokenMatcher matcher(std::vector<AddedToken> tokens) {
  std::vector<std::string> patterns;
  for (const AddedToken& t : tokens) patterns.push_back(t.content);
  return AddedTokenMatcher(std::move(tokens), std::move(patterns));
}

// (text, id) per span.
std::vector<std::pair<std::string, int32_t>> split(const AddedTokenMatcher& m,
                                                   std::string_view text) {
  std::vector<TextSpan> spans;
  m.split(text, &spans);
  std::vector<std::pair<std::string, int32_t>> out;
  for (const TextSpan& s : spans) {
    out.emplace_back(std::string(text.substr(s.begin, s.end - s.begin)), s.id);
  }
  return out;
}

using Spans = std::vector<std::pair<std::string, int32_t>>;

TEST(AddedTokens, SplitsAroundTokens) {
  const auto m = matcher({token(0, "my"), token(1, "name"), token(2, "[CLS]"), token(3, "[SEP]")});
  EXPECT_EQ(split(m, "[CLS] My name is Anthony [SEP]"),
            Spans({{"[CLS]", 2}, {" My ", -1}, {"name", 1}, {" is Anthony ", -1}, {"[SEP]", 3}}));
}

TEST(AddedTokens, PrefersTheLongestMatchAtTheLeftmostPosition) {
  const auto m = matcher({token(0, "<|im"), token(1, "<|im_start|>"), token(2, "start")});
  EXPECT_EQ(split(m, "a<|im_start|>b<|imx"),
            Spans({{"a", -1}, {"<|im_start|>", 1}, {"b", -1}, {"<|im", 0}, {"x", -1}}));
}

TEST(AddedTokens, SingleWordOnlyMatchesWholeWords) {
  AddedToken mask = token(0, "<mask>");
  mask.single_word = true;
  const auto m = matcher({mask});
  EXPECT_EQ(split(m, "<mask> My name <mask> A<mask> <mask>ony <mask>"),
            Spans({{"<mask>", 0},
                   {" My name ", -1},
                   {"<mask>", 0},
                   {" A<mask> <mask>ony ", -1},
                   {"<mask>", 0}}));
  // Punctuation is not a word character, a combining mark is.
  EXPECT_EQ(split(m, "<mask>, <mask>- \u25cc\u0330<mask>"),
            Spans({{"<mask>", 0}, {", ", -1}, {"<mask>", 0}, {"- \u25cc\u0330<mask>", -1}}));
}

TEST(AddedTokens, LstripAndRstripAbsorbUnicodeWhitespace) {
  AddedToken mask = token(0, "<mask>");
  mask.lstrip = mask.rstrip = mask.single_word = true;
  const auto m = matcher({mask});
  EXPECT_EQ(
      split(m, "Hi <mask> there\t<mask>\t<mask>\u2000"),
      Spans({{"Hi", -1}, {" <mask> ", 0}, {"there", -1}, {"\t<mask>\t", 0}, {"<mask>\u2000", 0}}));
}

TEST(AddedTokens, EmptyTextIsOneEmptySpan) {
  const auto m = matcher({token(0, "x")});
  EXPECT_EQ(split(m, ""), Spans({{"", -1}}));
}

}  // namespace
}  // namespace sieve::models
