#pragma once
// UTF-8 and Unicode helpers shared by the tokenizers: decoding with Unicode's "maximal subpart"
// rule (what Rust's String::from_utf8_lossy does, so repaired text matches Hugging Face's), the
// GPT-2 byte-to-unicode table, the character classes added tokens and pre-tokenizers test, and
// Unicode normalization through utf8proc.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sieve::models::unicode {

// The replacement character U+FFFD in UTF-8.
inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// One step of UTF-8 decoding at `pos`.
struct Utf8Step {
  enum Kind { kValid, kInvalid, kIncomplete } kind;
  char32_t code_point;  // valid only for kValid
  size_t length;        // bytes consumed: the sequence, the maximal invalid subpart, or the rest
};
Utf8Step decode_utf8(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of `code_point`.
void append_utf8(char32_t code_point, std::string* out);

bool is_valid_utf8(std::string_view text);

// Appends `bytes` with every maximal invalid subpart (and a truncated sequence at the end)
// replaced by U+FFFD, as String::from_utf8_lossy does.
void append_lossy_utf8(std::string_view bytes, std::string* out);

// Length of the suffix of `bytes` that is an unfinished but so far valid UTF-8 sequence (0..3):
// the bytes a stream must hold back until the next bytes arrive.
size_t incomplete_utf8_suffix(std::string_view bytes);

// GPT-2's reversible mapping of the 256 byte values onto printable code points.
char32_t byte_to_code_point(uint8_t byte);
// The inverse; -1 when `code_point` is not one of the 256 images.
int code_point_to_byte(char32_t code_point);

// Unicode White_Space (what `\s` matches in the Rust and Oniguruma regexes HF uses).
bool is_whitespace(char32_t code_point);
// Letters, marks, decimal digits and connector punctuation (`\w` in Rust's regex).
bool is_word_char(char32_t code_point);
// General category N* (Rust's char::is_numeric, used by the Digits pre-tokenizer).
bool is_numeric(char32_t code_point);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// Returns `text` (valid UTF-8) in the given normal form.
std::string normalize(std::string_view text, NormalForm form);

}  // namespace sieve::models::unicode
