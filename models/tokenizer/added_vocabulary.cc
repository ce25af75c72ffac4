#include "models/tokenizer/added_vocabulary.h"

#include <algorithm>

#include "models/tokenizer/unicode.h"

namespace sieve::models {
namespace {

// The code point that ends text[0, end), or 0 at the start. Text is valid UTF-8.
char32_t last_code_point(std::string_view text, size_t end) {
  if (end == 0) return 0;
  size_t begin = end - 1;
  while (begin > 0 && (static_cast<uint8_t>(text[begin]) & 0xC0) == 0x80) --begin;
  return unicode::decode_utf8(text, begin).code_point;
}

// Start of the whitespace run that ends at `end` (HF: regex `\s*$` on text[..end]).
size_t whitespace_run_start(std::string_view text, size_t end) {
  size_t start = end;
  while (start > 0) {
    size_t begin = start - 1;
    while (begin > 0 && (static_cast<uint8_t>(text[begin]) & 0xC0) == 0x80) --begin;
    if (!unicode::is_whitespace(unicode::decode_utf8(text, begin).code_point)) break;
    start = begin;
  }
  return start;
}

// End of the whitespace run that starts at `begin` (HF: regex `^\s*` on text[begin..]).
size_t whitespace_run_end(std::string_view text, size_t begin) {
  size_t end = begin;
  while (end < text.size()) {
    const unicode::Utf8Step step = unicode::decode_utf8(text, end);
    if (step.kind != unicode::Utf8Step::kValid || !unicode::is_whitespace(step.code_point)) break;
    end += step.length;
  }
  return end;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens,
                                     std::vector<std::string> patterns)
    : tokens_(std::move(tokens)) {
  nodes_.emplace_back();
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const std::string& pattern = patterns[i];
    if (pattern.empty()) continue;
    first_byte_[static_cast<uint8_t>(pattern[0])] = true;
    int32_t node = 0;
    for (const char ch : pattern) {
      const auto byte = static_cast<uint8_t>(ch);
      auto& children = nodes_[node].children;
      auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0),
                                 [](const auto& a, const auto& b) { return a.first < b.first; });
      if (it != children.end() && it->first == byte) {
        node = it->second;
        continue;
      }
      const auto child = static_cast<int32_t>(nodes_.size());
      children.insert(it, {byte, child});
      nodes_.emplace_back();
      node = child;
    }
    // The first token given for a pattern wins, as in HF's trie.
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<int32_t>(i);
  }
}

int32_t AddedTokenMatcher::longest_match(std::string_view text, size_t pos, size_t* length) const {
  int32_t best = -1;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    const auto& children = nodes_[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0),
                               [](const auto& a, const auto& b) { return a.first < b.first; });
    if (it == children.end() || it->first != byte) break;
    node = it->second;
    if (nodes_[node].token >= 0) {
      best = nodes_[node].token;
      *length = i + 1 - pos;
    }
  }
  return best;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<TextSpan>* spans) const {
  const size_t first_span = spans->size();
  size_t start_offset = 0;  // end of the last emitted span
  size_t pos = 0;           // where the search resumes (after any match, kept or discarded)
  while (pos < text.size()) {
    if (!first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    size_t length = 0;
    const int32_t index = longest_match(text, pos, &length);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = pos;
    size_t stop = pos + length;
    pos = stop;
    if (token.single_word) {
      const bool start_space = start == 0 || !unicode::is_word_char(last_code_point(text, start));
      bool stop_space = stop == text.size();
      if (!stop_space) {
        const unicode::Utf8Step next = unicode::decode_utf8(text, stop);
        stop_space = !unicode::is_word_char(next.code_point);
      }
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) start = std::max(whitespace_run_start(text, start), start_offset);
    if (token.rstrip) stop = whitespace_run_end(text, stop);
    if (start_offset < start) spans->push_back({start_offset, start, -1});
    spans->push_back({start, stop, token.id});
    start_offset = stop;
    pos = std::max(pos, stop);  // HF resumes at the match end; differs only for whitespace tokens
  }
  if (start_offset < text.size() || spans->size() == first_span) {
    spans->push_back({start_offset, text.size(), -1});
  }
}

}  // namespace sieve::models
