#pragma once
// Normalizers and pre-tokenizers of Hugging Face's tokenizer.json that Llama-family models use,
// and the regex engine behind them (PCRE2 in UTF + Unicode-property mode, JIT-compiled).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"
#include "models/tokenizer/unicode.h"

struct pcre2_real_code_8;

namespace sieve::models {

// A compiled pattern. Thread-safe: matching keeps its state per thread.
class Regex {
 public:
  // An error names the pattern and PCRE2's message.
  static StatusOr<std::shared_ptr<const Regex>> compile(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends [begin, end) of every non-overlapping, non-empty match in `text` (valid UTF-8).
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  explicit Regex(pcre2_real_code_8* code) : code_(code) {}
  pcre2_real_code_8* code_;
};

// Pre-tokenizer regexes of the model families, as their tokenizer.json files spell them.
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// One normalizer of tokenizer.json's "normalizer" (a Sequence is flattened).
struct NormalizerStep {
  enum class Kind { kUnicode, kPrepend, kReplace };
  explicit NormalizerStep(Kind kind) : kind(kind) {}
  Kind kind;
  unicode::NormalForm form = unicode::NormalForm::kNfc;  // kUnicode
  std::string text;                                      // kPrepend: prefix; kReplace: content
  std::string pattern;                                   // kReplace: literal to replace
  std::shared_ptr<const Regex> regex;                    // kReplace with a Regex pattern
};

// Applies `steps` in order to `text` (valid UTF-8).
std::string normalize_text(const std::vector<NormalizerStep>& steps, std::string_view text);

// How a Split keeps what its pattern matched (HF's SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Metaspace's rule for prepending the replacement character.
enum class PrependScheme { kAlways, kFirst, kNever };

// One pre-tokenizer of tokenizer.json's "pre_tokenizer" (a Sequence is flattened).
struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel, kDigits, kMetaspace };
  explicit PreTokenizerStep(Kind kind) : kind(kind) {}
  Kind kind;
  std::shared_ptr<const Regex> regex;  // kSplit; kByteLevel with use_regex (GPT-2's pattern)
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;                 // kSplit
  bool add_prefix_space = false;       // kByteLevel
  bool individual_digits = false;      // kDigits
  std::string replacement = "\u2581";  // kMetaspace
  PrependScheme prepend_scheme = PrependScheme::kAlways;
  bool split = true;  // kMetaspace: split on the replacement
};

// A word: bytes [begin, end) of a scratch buffer.
struct Piece {
  uint32_t begin = 0;
  uint32_t end = 0;
  bool at_start = false;  // starts at offset 0 of the original input (Metaspace "first")
};

// Splits `buffer` (valid UTF-8) into words with `steps`. Steps that rewrite text (a prepended
// space or metaspace) append the rewritten text to `buffer`, so pieces are offsets, not views.
void pre_tokenize(const std::vector<PreTokenizerStep>& steps, bool at_start, std::string* buffer,
                  std::vector<Piece>* pieces);

}  // namespace sieve::models
