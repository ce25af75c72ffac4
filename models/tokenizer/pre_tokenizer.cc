#include "models/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <spdlog/spdlog.h>

#include "core/check.h"

namespace sieve::models {
namespace {

// Per-thread match state, so one compiled pattern serves every thread without locks.
struct MatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  MatchState() { pcre2_jit_stack_assign(context, nullptr, jit_stack); }
  ~MatchState() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_data_free(data);
  }
};

struct Span {
  size_t begin, end;
  bool is_match;
};

// HF's NormalizedString::split: turns match/gap spans into pieces by `behavior`.
void split_by_behavior(const std::vector<Span>& spans, SplitBehavior behavior, const Piece& piece,
                       std::vector<Piece>* out) {
  const size_t first_out = out->size();
  auto push = [&](size_t begin, size_t end) {
    out->push_back({static_cast<uint32_t>(begin), static_cast<uint32_t>(end), false});
  };
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) push(s.begin, s.end);
      break;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) push(s.begin, s.end);
      }
      break;
    case SplitBehavior::kContiguous:
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        const bool merge = behavior == SplitBehavior::kContiguous ? s.is_match == previous_match
                                                                  : s.is_match && !previous_match;
        if (merge && out->size() > first_out) {
          out->back().end = static_cast<uint32_t>(s.end);
        } else {
          push(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext: {
      const size_t n = spans.size();
      std::vector<Piece> reversed;
      for (size_t i = n; i-- > 0;) {
        const Span& s = spans[i];
        if (s.is_match && !previous_match && !reversed.empty()) {
          reversed.back().begin = static_cast<uint32_t>(s.begin);
        } else {
          reversed.push_back({static_cast<uint32_t>(s.begin), static_cast<uint32_t>(s.end), false});
        }
        previous_match = s.is_match;
      }
      out->insert(out->end(), reversed.rbegin(), reversed.rend());
      break;
    }
  }
  // Drop empty pieces; only a piece starting where the input started keeps "at start".
  size_t kept = first_out;
  for (size_t i = first_out; i < out->size(); ++i) {
    Piece p = (*out)[i];
    if (p.begin == p.end) continue;
    p.at_start = piece.at_start && p.begin == piece.begin;
    (*out)[kept++] = p;
  }
  out->resize(kept);
}

// Match/gap spans covering [piece.begin, piece.end) from `matches` (absolute offsets, sorted).
void spans_from_matches(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches,
                        bool invert, std::vector<Span>* spans) {
  spans->clear();
  size_t prev = piece.begin;
  for (const auto& [begin, end] : matches) {
    if (prev < begin) spans->push_back({prev, begin, invert});
    spans->push_back({begin, end, !invert});
    prev = end;
  }
  if (prev < piece.end) spans->push_back({prev, piece.end, invert});
}

// Offsets of every occurrence of `literal` in `text`, shifted by `base`.
void find_literal(std::string_view text, std::string_view literal, size_t base,
                  std::vector<std::pair<size_t, size_t>>* matches) {
  if (literal.empty()) return;
  for (size_t pos = text.find(literal); pos != std::string_view::npos;
       pos = text.find(literal, pos + literal.size())) {
    matches->push_back({base + pos, base + pos + literal.size()});
  }
}

void replace_all(std::string_view text, std::string_view from, std::string_view to,
                 std::string* out) {
  size_t prev = 0;
  for (size_t pos = text.find(from); !from.empty() && pos != std::string_view::npos;
       pos = text.find(from, prev)) {
    out->append(text.substr(prev, pos - prev));
    out->append(to);
    prev = pos + from.size();
  }
  out->append(text.substr(prev));
}

// Applies one step to one piece, appending the resulting pieces to `out`.
void apply_step(const PreTokenizerStep& step, Piece piece, std::string* buffer,
                std::vector<Piece>* out, std::vector<std::pair<size_t, size_t>>* matches,
                std::vector<Span>* spans) {
  matches->clear();
  switch (step.kind) {
    case PreTokenizerStep::Kind::kByteLevel: {
      if (step.add_prefix_space && (*buffer)[piece.begin] != ' ') {
        const std::string rewritten = " " + buffer->substr(piece.begin, piece.end - piece.begin);
        piece.begin = static_cast<uint32_t>(buffer->size());
        buffer->append(rewritten);
        piece.end = static_cast<uint32_t>(buffer->size());
      }
      if (!step.regex) {
        out->push_back(piece);
        return;
      }
      [[fallthrough]];
    }
    case PreTokenizerStep::Kind::kSplit: {
      const std::string_view text(buffer->data() + piece.begin, piece.end - piece.begin);
      step.regex->find_all(text, matches);
      for (auto& [begin, end] : *matches) begin += piece.begin, end += piece.begin;
      spans_from_matches(piece, *matches,
                         step.kind == PreTokenizerStep::Kind::kSplit && step.invert, spans);
      split_by_behavior(
          *spans,
          step.kind == PreTokenizerStep::Kind::kSplit ? step.behavior : SplitBehavior::kIsolated,
          piece, out);
      return;
    }
    case PreTokenizerStep::Kind::kDigits: {
      const std::string_view text(buffer->data() + piece.begin, piece.end - piece.begin);
      for (size_t pos = 0; pos < text.size();) {
        const unicode::Utf8Step s = unicode::decode_utf8(text, pos);
        if (unicode::is_numeric(s.code_point)) {
          matches->push_back({piece.begin + pos, piece.begin + pos + s.length});
        }
        pos += s.length;
      }
      spans_from_matches(piece, *matches, false, spans);
      split_by_behavior(
          *spans, step.individual_digits ? SplitBehavior::kIsolated : SplitBehavior::kContiguous,
          piece, out);
      return;
    }
    case PreTokenizerStep::Kind::kMetaspace: {
      std::string rewritten;
      replace_all(std::string_view(buffer->data() + piece.begin, piece.end - piece.begin), " ",
                  step.replacement, &rewritten);
      const bool prepend = (step.prepend_scheme == PrependScheme::kAlways ||
                            (step.prepend_scheme == PrependScheme::kFirst && piece.at_start)) &&
                           !std::string_view(rewritten).starts_with(step.replacement);
      if (prepend) rewritten.insert(0, step.replacement);
      piece.begin = static_cast<uint32_t>(buffer->size());
      buffer->append(rewritten);
      piece.end = static_cast<uint32_t>(buffer->size());
      if (!step.split) {
        out->push_back(piece);
        return;
      }
      find_literal(rewritten, step.replacement, piece.begin, matches);
      spans_from_matches(piece, *matches, false, spans);
      split_by_behavior(*spans, SplitBehavior::kMergedWithNext, piece, out);
      return;
    }
  }
}

}  // namespace

StatusOr<std::shared_ptr<const Regex>> Regex::compile(std::string_view pattern) {
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return InvalidArgumentError(fmt::format("bad regex '{}' at offset {}: {}", pattern,
                                            error_offset, reinterpret_cast<char*>(message)));
  }
  // Without JIT support (some platforms) PCRE2 interprets the pattern: slower, same result.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::shared_ptr<const Regex>(new Regex(code));
}

Regex::~Regex() { pcre2_code_free(code_); }

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  thread_local MatchState state;
  // PCRE2's \s still counts U+180E (Mongolian vowel separator) as space, as Unicode did before
  // 6.3; Oniguruma and Rust, which HF uses, do not. Match on a copy where it is U+200B, another
  // 3-byte format character that no \s, \w, \p{L} or \p{N} matches, so offsets carry over.
  constexpr std::string_view kMongolianVowelSeparator = "\xE1\xA0\x8E";
  std::string swapped;
  if (text.find(kMongolianVowelSeparator) != std::string_view::npos) {
    swapped = text;
    for (size_t pos = swapped.find(kMongolianVowelSeparator); pos != std::string::npos;
         pos = swapped.find(kMongolianVowelSeparator, pos + 3)) {
      swapped.replace(pos, 3, "\xE2\x80\x8B");
    }
    text = swapped;
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t offset = 0;
  while (offset < text.size()) {
    const int rc = pcre2_match(code_, subject, text.size(), offset, PCRE2_NO_UTF_CHECK, state.data,
                               state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      // Only resource limits can fail here; the rest of the text stays one unmatched piece.
      spdlog::error("tokenizer regex failed with PCRE2 error {} at offset {}", rc, offset);
      break;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    const size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      matches->push_back({begin, end});
      offset = end;
    } else {
      offset = end + unicode::decode_utf8(text, end).length;  // step over an empty match
    }
  }
}

std::string normalize_text(const std::vector<NormalizerStep>& steps, std::string_view text) {
  std::string current(text);
  std::string next;
  std::vector<std::pair<size_t, size_t>> matches;
  for (const NormalizerStep& step : steps) {
    switch (step.kind) {
      case NormalizerStep::Kind::kUnicode:
        current = unicode::normalize(current, step.form);
        break;
      case NormalizerStep::Kind::kPrepend:
        if (!current.empty()) current.insert(0, step.text);
        break;
      case NormalizerStep::Kind::kReplace:
        next.clear();
        if (step.regex) {
          matches.clear();
          step.regex->find_all(current, &matches);
          size_t prev = 0;
          for (const auto& [begin, end] : matches) {
            next.append(current, prev, begin - prev);
            next.append(step.text);
            prev = end;
          }
          next.append(current, prev);
        } else {
          replace_all(current, step.pattern, step.text, &next);
        }
        current.swap(next);
        break;
    }
  }
  return current;
}

void pre_tokenize(const std::vector<PreTokenizerStep>& steps, bool at_start, std::string* buffer,
                  std::vector<Piece>* pieces) {
  pieces->clear();
  if (buffer->empty()) return;
  pieces->push_back({0, static_cast<uint32_t>(buffer->size()), at_start});
  thread_local std::vector<Piece> next;  // reused: encoding allocates little
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  thread_local std::vector<Span> spans;
  for (const PreTokenizerStep& step : steps) {
    next.clear();
    for (const Piece& piece : *pieces) apply_step(step, piece, buffer, &next, &matches, &spans);
    pieces->swap(next);
  }
}

}  // namespace sieve::models
