#pragma once
// Token strings -> text, as Hugging Face's decoders compute it, written as a stream: decode() and
// the incremental detokenizer run the same code, so their outputs agree by construction.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sieve::models {

// The decoders of tokenizer.json that Llama-family tokenizers use.
struct DecoderSpec {
  enum class Kind {
    kByteLevel,      // GPT-2 byte-to-unicode mapping reversed, then lossy UTF-8
    kSentencePiece,  // Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", n, 0)]
    kMetaspace,      // Metaspace: "▁" -> " ", dropped in the first token unless scheme "never"
    kJoin,           // no decoder: tokens joined by " "
  };
  Kind kind = Kind::kByteLevel;
  bool replace_metaspace = true;       // kSentencePiece: has the Replace("▁", " ") step
  bool byte_fallback = true;           // kSentencePiece: <0xXX> tokens are raw bytes
  int strip_leading_spaces = 0;        // kSentencePiece: Strip's `start`
  std::string replacement = "\u2581";  // kMetaspace
  bool strip_first = true;             // kMetaspace: prepend_scheme is not "never"
};

// Per-token decoding data for one vocabulary. Immutable; shared by all streams.
class TokenDecoder {
 public:
  TokenDecoder() = default;
  TokenDecoder(DecoderSpec spec, const std::vector<std::string>& token_texts);

  // One decode in progress. Every output is valid UTF-8; text whose bytes are not settled yet
  // (a partial character, a run of byte tokens) is held until a later push or finish().
  class Stream {
   public:
    explicit Stream(const TokenDecoder* decoder);
    // Appends the text that token `id` (a valid id) settles.
    void push(int32_t id, std::string* out);
    // Appends everything still held.
    void finish(std::string* out);

   private:
    void flush_byte_run(std::string* out);
    void emit(std::string_view text, std::string* out);

    const TokenDecoder* decoder_;
    std::string pending_;     // held bytes
    int pending_tokens_ = 0;  // byte tokens in pending_ (kSentencePiece)
    int strip_left_ = 0;      // leading spaces still to strip (kSentencePiece)
    bool first_ = true;       // no token pushed yet
  };

 private:
  DecoderSpec spec_;
  std::vector<std::string> pieces_;        // per id: bytes (kByteLevel) or text with "▁" replaced
  std::vector<std::string> first_pieces_;  // kMetaspace: the text when the token comes first
  std::vector<int16_t> byte_values_;       // kSentencePiece: 0..255 for <0xXX> tokens, else -1
};

}  // namespace sieve::models
