#include "models/tokenizer/sentencepiece_tokenizer.h"

#include <fmt/format.h>

#include "models/tokenizer/spm_processor.h"

namespace sieve::models {
namespace {

class SentencePieceTokenizer final : public TokenizerBase {
 public:
  SentencePieceTokenizer(TokenizerParts parts, std::unique_ptr<SpmProcessor> processor)
      : TokenizerBase(std::move(parts), /*normalized_in_model=*/false),
        processor_(std::move(processor)) {}

 protected:
  // libsentencepiece normalizes and adds the dummy prefix to each span it gets, which is what
  // HF's legacy Llama normalizer (Prepend "▁" + Replace " " -> "▁") does per span.
  void encode_text(std::string_view text, bool /*at_start*/,
                   std::vector<int32_t>* ids) const override {
    processor_->encode(text, ids);
  }

 private:
  std::unique_ptr<SpmProcessor> processor_;
};

}  // namespace

void fill_sentencepiece_parts(const SpmModel& model, TokenizerParts* parts) {
  const size_t num_pieces = model.pieces.size();
  parts->token_texts.resize(std::max(parts->token_texts.size(), num_pieces));
  std::vector<bool> given(parts->token_texts.size(), false);
  for (const AddedToken& token : parts->added_tokens) {
    if (static_cast<size_t>(token.id) >= given.size()) {
      parts->token_texts.resize(static_cast<size_t>(token.id) + 1);
      given.resize(parts->token_texts.size(), false);
    }
    given[token.id] = true;
  }
  for (size_t id = 0; id < num_pieces; ++id) {
    const SpmModel::Piece& piece = model.pieces[id];
    parts->token_texts[id] = piece.text;
    const bool control = piece.type == SpmModel::kControl || piece.type == SpmModel::kUnknown;
    if (given[id] || !(control || piece.type == SpmModel::kUserDefined)) continue;
    parts->added_tokens.emplace_back(static_cast<int32_t>(id), piece.text, control);
  }
  for (const AddedToken& token : parts->added_tokens) parts->token_texts[token.id] = token.content;
  parts->decoder = DecoderSpec();
  parts->decoder.kind = DecoderSpec::Kind::kSentencePiece;
  parts->decoder.byte_fallback = model.byte_fallback;
  parts->decoder.strip_leading_spaces = model.add_dummy_prefix ? 1 : 0;
}

StatusOr<std::unique_ptr<Tokenizer>> make_sentencepiece_tokenizer(std::string_view serialized_model,
                                                                  TokenizerParts parts) {
  std::string error;
  std::unique_ptr<SpmProcessor> processor = SpmProcessor::load(serialized_model, &error);
  if (processor == nullptr) {
    return InvalidArgumentError(fmt::format("libsentencepiece rejected the model: {}", error));
  }
  return std::unique_ptr<Tokenizer>(
      new SentencePieceTokenizer(std::move(parts), std::move(processor)));
}

}  // namespace sieve::models
