#pragma once
// What every tokenizer shares besides its model: added tokens matched in text, the tokens
// add_special_tokens adds, decoding, special ids. BpeTokenizer and SentencePieceTokenizer supply
// the model through encode_text().

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "models/tokenizer/added_vocabulary.h"
#include "models/tokenizer/token_decoder.h"
#include "models/tokenizer/tokenizer.h"

namespace sieve::models {

// Hash and equality over string_view, so that maps keyed by std::string are searched with a
// string_view without a copy (Debian's Abseil has its own absl::string_view, which
// std::string_view does not convert to).
struct TextHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const { return std::hash<std::string_view>()(text); }
};
struct TextEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};
template <typename Value>
using TextMap = absl::flat_hash_map<std::string, Value, TextHash, TextEq>;

// The shared parts, as a loader assembles them.
struct TokenizerParts {
  std::vector<std::string> token_texts;  // id -> text (HF's id_to_token; added tokens included)
  std::vector<AddedToken> added_tokens;
  std::vector<int32_t> prefix_ids;  // what add_special_tokens puts before the text (BOS)
  std::vector<int32_t> suffix_ids;  // ... and after it (EOS)
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
  std::vector<int32_t> extra_stop_ids;  // generation_config.json eos ids, GGUF eot
  DecoderSpec decoder;
  std::string chat_template;
};

class TokenizerBase : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  using Tokenizer::make_detokenizer;
  std::unique_ptr<IncrementalDetokenizer> make_detokenizer(
      bool skip_special_tokens, std::span<const int32_t> context_ids) const override;
  int vocab_size() const override { return static_cast<int>(token_texts_.size()); }
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> eos_id() const override { return eos_id_; }
  std::vector<int32_t> stop_token_ids() const override { return stop_ids_; }
  std::string_view token_text(int32_t id) const override;
  std::optional<int32_t> token_to_id(std::string_view token_text) const override;
  bool is_special(int32_t id) const override;
  const std::string& chat_template() const override { return chat_template_; }

  // True when decode(skip_special_tokens) leaves `id` out and the id is in range.
  bool decodes(int32_t id, bool skip_special_tokens) const;
  const TokenDecoder& token_decoder() const { return decoder_; }

 protected:
  // `normalized_in_model`: the model matches normalized added tokens itself (after its
  // normalizer); otherwise all added tokens are matched in the raw text.
  TokenizerBase(TokenizerParts parts, bool normalized_in_model);

  // Appends the ids of `text`, a part of the input with no (raw-matched) added token in it;
  // `at_start` when it begins the input.
  virtual void encode_text(std::string_view text, bool at_start,
                           std::vector<int32_t>* ids) const = 0;

  const std::vector<AddedToken>& added_tokens() const { return added_tokens_; }

 private:
  std::vector<std::string> token_texts_;
  std::vector<AddedToken> added_tokens_;
  std::vector<bool> special_;
  TextMap<int32_t> ids_by_text_;
  AddedTokenMatcher raw_matcher_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  std::optional<int32_t> bos_id_, eos_id_;
  std::vector<int32_t> stop_ids_;
  TokenDecoder decoder_;
  std::string chat_template_;
};

}  // namespace sieve::models
