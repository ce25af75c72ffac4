#include "models/tokenizer/unicode.h"

#include <gtest/gtest.h>

namespace sieve::models::unicode {
namespace {

std::string lossy(std::string_view bytes) {
  std::string out;
  append_lossy_utf8(bytes, &out);
  return out;
}

const std::string kFffd(kReplacement);

// Expected values follow Rust's String::from_utf8_lossy (Unicode's maximal-subpart rule).
TEST(Unicode, LossyRepairReplacesMaximalSubparts) {
  EXPECT_EQ(lossy("abc"), "abc");
  EXPECT_EQ(lossy("\xe4\xbd\xa0"), "\xe4\xbd\xa0");
  EXPECT_EQ(lossy("\xe4\xbd"), kFffd);  // truncated: one U+FFFD
  EXPECT_EQ(lossy("\xe4\xbd"
                  "A"),
            kFffd + "A");                                   // broken by ASCII
  EXPECT_EQ(lossy("\xff\xfe"), kFffd + kFffd);              // never valid bytes
  EXPECT_EQ(lossy("\x80\x80"), kFffd + kFffd);              // stray continuations
  EXPECT_EQ(lossy("\xed\xa0\x80"), kFffd + kFffd + kFffd);  // surrogate: lead alone is the part
  EXPECT_EQ(lossy("\xf0\x9f\x98"), kFffd);
  EXPECT_EQ(lossy("\xf4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // above U+10FFFF
  EXPECT_EQ(lossy("\xc0\xaf"), kFffd + kFffd);                          // overlong
}

TEST(Unicode, IncompleteSuffixIsWhatMayStillBecomeValid) {
  EXPECT_EQ(incomplete_utf8_suffix("ab"), 0u);
  EXPECT_EQ(incomplete_utf8_suffix("a\xe4"), 1u);
  EXPECT_EQ(incomplete_utf8_suffix("a\xe4\xbd"), 2u);
  EXPECT_EQ(incomplete_utf8_suffix("a\xe4\xbd\xa0"), 0u);
  EXPECT_EQ(incomplete_utf8_suffix("\xf0\x9f\x98"), 3u);
  EXPECT_EQ(incomplete_utf8_suffix("\xed\xa0"), 0u);  // can never complete
  EXPECT_EQ(incomplete_utf8_suffix("\x80"), 0u);
}

TEST(Unicode, ByteMappingIsGpt2sAndInvertible) {
  EXPECT_EQ(byte_to_code_point(' '), U'\u0120');   // "Ġ"
  EXPECT_EQ(byte_to_code_point('\n'), U'\u010A');  // "Ċ"
  EXPECT_EQ(byte_to_code_point('a'), U'a');
  EXPECT_EQ(byte_to_code_point(0xAD), U'\u0143');
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(code_point_to_byte(byte_to_code_point(static_cast<uint8_t>(b))), b);
  }
  EXPECT_EQ(code_point_to_byte(U' '), -1);
  EXPECT_EQ(code_point_to_byte(U'\u4e2d'), -1);
}

TEST(Unicode, NormalizesWithUtf8proc) {
  EXPECT_EQ(normalize("cafe\u0301", NormalForm::kNfc), "caf\u00e9");
  EXPECT_EQ(normalize("caf\u00e9", NormalForm::kNfd), "cafe\u0301");
  EXPECT_EQ(normalize("\uff11\ufb01", NormalForm::kNfkc), "1fi");
  EXPECT_EQ(normalize("plain ascii", NormalForm::kNfc), "plain ascii");
}

TEST(Unicode, CharacterClasses) {
  EXPECT_TRUE(is_whitespace(U'\u3000'));
  EXPECT_TRUE(is_whitespace(U'\u0085'));
  EXPECT_FALSE(is_whitespace(U'\u180e'));
  EXPECT_FALSE(is_whitespace(U'\u200b'));
  EXPECT_TRUE(is_word_char(U'\u00e9'));
  EXPECT_TRUE(is_word_char(U'\u0301'));
  EXPECT_FALSE(is_word_char(U'-'));
  EXPECT_TRUE(is_numeric(U'\u0663'));
  EXPECT_TRUE(is_numeric(U'\u00b2'));
  EXPECT_FALSE(is_numeric(U'x'));
}

}  // namespace
}  // namespace sieve::models::unicode
