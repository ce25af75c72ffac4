#pragma once
// Text <-> token ids, computed as Hugging Face's `tokenizers` computes them, for byte-level BPE
// vocabularies (GPT-2, Llama 3, Qwen2, SmolLM2) and SentencePiece ones (Llama 2, Mistral),
// loaded from a Hugging Face model directory or from a GGUF file's vocabulary.
//
// A Tokenizer is immutable after loading and safe to use from several threads at once.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "models/tokenizer/vocab.h"

namespace sieve::models {

// Turns ids into text one id at a time, for streaming. Not thread-safe; one per sequence.
class IncrementalDetokenizer {
 public:
  virtual ~IncrementalDetokenizer() = default;
  // Adds `id` and returns the text it settles: valid UTF-8, possibly empty while a character
  // or a run of byte tokens is unfinished. Ids outside the vocabulary are ignored.
  virtual std::string feed(int32_t id) = 0;
  // Returns what is still held (an unfinished character becomes U+FFFD). All feed() results
  // followed by finish() concatenate to exactly decode(ids).
  virtual std::string finish() = 0;
};

// One vocabulary's encoder and decoder. Implemented by the byte-level BPE and SentencePiece
// tokenizers that the factories below return.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`. Added and special tokens written in the text (e.g. "<|im_end|>") are
  // matched first, as HF does; add_special_tokens adds what the post-processor (or GGUF's
  // add_bos/add_eos) adds, such as BOS. Invalid UTF-8 is first repaired to U+FFFD.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
  // Text of `ids`; ids outside the vocabulary are skipped, as HF skips them.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;
  // A streaming decoder over this tokenizer, which must outlive it. `context_ids` (say, the
  // prompt's last few ids) are decoded first and their text dropped, so that the first delta
  // reads as a continuation: SentencePiece's "▁Paris" after a prompt gives " Paris", where
  // decode() of the generated ids alone gives "Paris". The deltas then concatenate to what
  // decode(context + ids) adds after the context's settled text.
  virtual std::unique_ptr<IncrementalDetokenizer> make_detokenizer(
      bool skip_special_tokens, std::span<const int32_t> context_ids) const = 0;
  // The same without context: deltas concatenate to decode(ids).
  std::unique_ptr<IncrementalDetokenizer> make_detokenizer(bool skip_special_tokens) const {
    return make_detokenizer(skip_special_tokens, {});
  }

  // Number of ids, added tokens included (the model's embedding table may be larger).
  virtual int vocab_size() const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  // EOS, the ids generation_config.json or GGUF name as ends, and the end-of-turn / end-of-text
  // special tokens present (<|im_end|>, <|eot_id|>, <|end_of_text|>, </s>, ...); sorted, unique.
  virtual std::vector<int32_t> stop_token_ids() const = 0;
  // The token's text as the vocabulary stores it ("Ġthe", "▁the", "<|im_end|>"); empty when
  // `id` is out of range.
  virtual std::string_view token_text(int32_t id) const = 0;
  // The id of a token given as the vocabulary stores it (added tokens included).
  virtual std::optional<int32_t> token_to_id(std::string_view token_text) const = 0;
  // True for special added tokens (GGUF: control tokens); decode may skip them.
  virtual bool is_special(int32_t id) const = 0;
  // The Jinja chat template that came with the tokenizer, or empty.
  virtual const std::string& chat_template() const = 0;
};

// Loads tokenizer.json (else tokenizer.model, through libsentencepiece) from a Hugging Face
// model directory, with tokenizer_config.json (BOS/EOS, added-token flags, chat template) and
// generation_config.json (EOS ids) when present. Errors name the file and the field.
StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer_from_hf_dir(const std::string& dir);

// Builds a tokenizer from a GGUF vocabulary: "gpt2" (byte-level BPE with merges; the
// pre-tokenizer chosen by `vocab.pre`) or "llama" (SentencePiece from scores, byte fallback).
StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer_from_vocab(const VocabData& vocab);

}  // namespace sieve::models
