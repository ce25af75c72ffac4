#include "models/tokenizer/token_decoder.h"

#include "models/tokenizer/unicode.h"

namespace sieve::models {
namespace {

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  size_t prev = 0;
  for (size_t pos = text.find(from); pos != std::string_view::npos; pos = text.find(from, prev)) {
    out.append(text.substr(prev, pos - prev));
    out.append(to);
    prev = pos + from.size();
  }
  out.append(text.substr(prev));
  return out;
}

// HF's ByteLevel decoder per token: the bytes its characters stand for, or the token's own
// UTF-8 when some character is not one of the 256 byte images.
std::string byte_level_bytes(std::string_view text) {
  std::string bytes;
  for (size_t pos = 0; pos < text.size();) {
    const unicode::Utf8Step step = unicode::decode_utf8(text, pos);
    const int byte =
        step.kind == unicode::Utf8Step::kValid ? unicode::code_point_to_byte(step.code_point) : -1;
    if (byte < 0) return std::string(text);
    bytes.push_back(static_cast<char>(byte));
    pos += step.length;
  }
  return bytes;
}

// HF's ByteFallback test: exactly "<0xHH>".
int byte_token_value(std::string_view text) {
  if (text.size() != 6 || !text.starts_with("<0x") || text.back() != '>') return -1;
  int value = 0;
  for (const char c : text.substr(3, 2)) {
    value *= 16;
    if (c >= '0' && c <= '9') {
      value += c - '0';
    } else if (c >= 'a' && c <= 'f') {
      value += c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      value += c - 'A' + 10;
    } else {
      return -1;
    }
  }
  return value;
}

}  // namespace

TokenDecoder::TokenDecoder(DecoderSpec spec, const std::vector<std::string>& token_texts)
    : spec_(std::move(spec)) {
  pieces_.reserve(token_texts.size());
  if (spec_.kind == DecoderSpec::Kind::kSentencePiece) byte_values_.reserve(token_texts.size());
  for (const std::string& text : token_texts) {
    switch (spec_.kind) {
      case DecoderSpec::Kind::kByteLevel:
        pieces_.push_back(byte_level_bytes(text));
        break;
      case DecoderSpec::Kind::kSentencePiece:
        pieces_.push_back(spec_.replace_metaspace ? replace_all(text, "\u2581", " ") : text);
        byte_values_.push_back(
            static_cast<int16_t>(spec_.byte_fallback ? byte_token_value(text) : -1));
        break;
      case DecoderSpec::Kind::kMetaspace:
        pieces_.push_back(replace_all(text, spec_.replacement, " "));
        first_pieces_.push_back(spec_.strip_first ? replace_all(text, spec_.replacement, "")
                                                  : pieces_.back());
        break;
      case DecoderSpec::Kind::kJoin:
        pieces_.push_back(text);
        break;
    }
  }
}

TokenDecoder::Stream::Stream(const TokenDecoder* decoder)
    : decoder_(decoder), strip_left_(decoder->spec_.strip_leading_spaces) {}

void TokenDecoder::Stream::push(int32_t id, std::string* out) {
  const std::string& piece = decoder_->pieces_[id];
  const bool first = first_;
  first_ = false;
  switch (decoder_->spec_.kind) {
    case DecoderSpec::Kind::kByteLevel: {
      pending_.append(piece);
      const size_t hold = unicode::incomplete_utf8_suffix(pending_);
      unicode::append_lossy_utf8(std::string_view(pending_).substr(0, pending_.size() - hold), out);
      pending_.erase(0, pending_.size() - hold);
      return;
    }
    case DecoderSpec::Kind::kSentencePiece: {
      const int16_t byte = decoder_->byte_values_[id];
      if (byte >= 0) {
        pending_.push_back(static_cast<char>(byte));
        ++pending_tokens_;
        return;
      }
      flush_byte_run(out);
      emit(piece, out);
      return;
    }
    case DecoderSpec::Kind::kMetaspace:
      out->append(first ? decoder_->first_pieces_[id] : piece);
      return;
    case DecoderSpec::Kind::kJoin:
      if (!first) out->push_back(' ');
      out->append(piece);
      return;
  }
}

void TokenDecoder::Stream::finish(std::string* out) {
  if (decoder_->spec_.kind == DecoderSpec::Kind::kByteLevel) {
    unicode::append_lossy_utf8(pending_, out);
    pending_.clear();
  } else {
    flush_byte_run(out);
  }
}

// ByteFallback: a run of byte tokens is its text if the whole run is valid UTF-8, else one
// U+FFFD per byte token.
void TokenDecoder::Stream::flush_byte_run(std::string* out) {
  if (pending_tokens_ == 0) return;
  if (unicode::is_valid_utf8(pending_)) {
    emit(pending_, out);
  } else {
    std::string replacement;
    for (int i = 0; i < pending_tokens_; ++i) replacement.append(unicode::kReplacement);
    emit(replacement, out);
  }
  pending_.clear();
  pending_tokens_ = 0;
}

// Fuse + Strip(" ", n, 0): drops up to n spaces at the very start of the decoded text.
void TokenDecoder::Stream::emit(std::string_view text, std::string* out) {
  size_t skip = 0;
  while (strip_left_ > 0 && skip < text.size() && text[skip] == ' ') {
    ++skip;
    --strip_left_;
  }
  if (skip < text.size()) strip_left_ = 0;
  out->append(text.substr(skip));
}

}  // namespace sieve::models
