#include "models/tokenizer/tokenizer_base.h"

#include <algorithm>

#include "core/check.h"
#include "models/tokenizer/unicode.h"

namespace sieve::models {
namespace {

// Special tokens that end a turn or a document in the model families Sieve serves.
constexpr std::string_view kEndTokens[] = {
    "<|im_end|>", "<|eot_id|>",    "<|end_of_text|>", "</s>",    "<|endoftext|>",
    "<|eom_id|>", "<end_of_turn>", "<|end|>",         "<|eos|>",
};

class Detokenizer : public IncrementalDetokenizer {
 public:
  Detokenizer(const TokenizerBase* tokenizer, bool skip_special_tokens,
              std::span<const int32_t> context_ids)
      : tokenizer_(tokenizer),
        skip_special_tokens_(skip_special_tokens),
        stream_(&tokenizer->token_decoder()) {
    std::string dropped;
    for (const int32_t id : context_ids) {
      if (tokenizer_->decodes(id, skip_special_tokens_)) stream_.push(id, &dropped);
    }
  }

  std::string feed(int32_t id) override {
    std::string delta;
    if (tokenizer_->decodes(id, skip_special_tokens_)) stream_.push(id, &delta);
    return delta;
  }

  std::string finish() override {
    std::string rest;
    stream_.finish(&rest);
    return rest;
  }

 private:
  const TokenizerBase* tokenizer_;
  bool skip_special_tokens_;
  TokenDecoder::Stream stream_;
};

}  // namespace

TokenizerBase::TokenizerBase(TokenizerParts parts, bool normalized_in_model)
    : token_texts_(std::move(parts.token_texts)),
      added_tokens_(std::move(parts.added_tokens)),
      special_(token_texts_.size(), false),
      prefix_ids_(std::move(parts.prefix_ids)),
      suffix_ids_(std::move(parts.suffix_ids)),
      bos_id_(parts.bos_id),
      eos_id_(parts.eos_id),
      decoder_(std::move(parts.decoder), token_texts_),
      chat_template_(std::move(parts.chat_template)) {
  ids_by_text_.reserve(token_texts_.size());
  for (size_t id = 0; id < token_texts_.size(); ++id) {
    if (!token_texts_[id].empty())
      ids_by_text_.try_emplace(token_texts_[id], static_cast<int32_t>(id));
  }
  std::vector<AddedToken> raw;
  std::vector<std::string> patterns;
  for (const AddedToken& token : added_tokens_) {
    SIEVE_CHECK(token.id >= 0 && token.id < vocab_size()) << "added token id " << token.id;
    ids_by_text_.insert_or_assign(token.content, token.id);
    if (token.special) special_[token.id] = true;
    if (!token.normalized || !normalized_in_model) {
      raw.push_back(token);
      patterns.push_back(token.content);
    }
  }
  raw_matcher_ = AddedTokenMatcher(std::move(raw), std::move(patterns));

  stop_ids_ = std::move(parts.extra_stop_ids);
  if (eos_id_) stop_ids_.push_back(*eos_id_);
  for (const std::string_view name : kEndTokens) {
    const auto it = ids_by_text_.find(name);
    if (it != ids_by_text_.end() && special_[it->second]) stop_ids_.push_back(it->second);
  }
  std::sort(stop_ids_.begin(), stop_ids_.end());
  stop_ids_.erase(std::unique(stop_ids_.begin(), stop_ids_.end()), stop_ids_.end());
}

std::vector<int32_t> TokenizerBase::encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!unicode::is_valid_utf8(text)) {
    unicode::append_lossy_utf8(text, &repaired);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + prefix_ids_.size() + suffix_ids_.size() + 1);
  if (add_special_tokens) ids.insert(ids.end(), prefix_ids_.begin(), prefix_ids_.end());
  std::vector<TextSpan> spans;
  raw_matcher_.split(text, &spans);
  for (const TextSpan& span : spans) {
    if (span.id >= 0) {
      ids.push_back(span.id);
    } else {
      encode_text(text.substr(span.begin, span.end - span.begin), span.begin == 0, &ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

bool TokenizerBase::decodes(int32_t id, bool skip_special_tokens) const {
  if (id < 0 || id >= vocab_size()) return false;
  return !(skip_special_tokens && special_[id]);
}

std::string TokenizerBase::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string text;
  TokenDecoder::Stream stream(&decoder_);
  for (const int32_t id : ids) {
    if (decodes(id, skip_special_tokens)) stream.push(id, &text);
  }
  stream.finish(&text);
  return text;
}

std::unique_ptr<IncrementalDetokenizer> TokenizerBase::make_detokenizer(
    bool skip_special_tokens, std::span<const int32_t> context_ids) const {
  return std::make_unique<Detokenizer>(this, skip_special_tokens, context_ids);
}

std::string_view TokenizerBase::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return token_texts_[id];
}

std::optional<int32_t> TokenizerBase::token_to_id(std::string_view token_text) const {
  const auto it = ids_by_text_.find(token_text);
  if (it == ids_by_text_.end()) return std::nullopt;
  return it->second;
}

bool TokenizerBase::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && special_[id];
}

}  // namespace sieve::models
