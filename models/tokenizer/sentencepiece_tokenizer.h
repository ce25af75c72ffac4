#pragma once
// SentencePiece models (Llama 2, Mistral tokenizer.model; GGUF "llama" vocabularies) encoded by
// libsentencepiece, behaving as Hugging Face's LlamaTokenizerFast does around it: special tokens
// in text are matched first, every text span gets the dummy-prefix "▁" (HF's legacy mode), and
// decoding drops the one leading space the prefix added.

#include <memory>
#include <string>

#include "core/status.h"
#include "models/tokenizer/spm_model.h"
#include "models/tokenizer/tokenizer_base.h"

namespace sieve::models {

// Fills the token texts, added tokens and decoder of `parts` from the model's pieces: control
// and unknown pieces become special added tokens, user-defined ones plain added tokens (as HF's
// converter makes them); added tokens already in `parts` (tokenizer_config.json) take priority.
// Added token ids must be >= 0.
void fill_sentencepiece_parts(const SpmModel& model, TokenizerParts* parts);

// Builds the tokenizer from a serialized ModelProto and parts filled as above (plus BOS/EOS
// handling, stop ids and chat template). An error carries libsentencepiece's message.
StatusOr<std::unique_ptr<Tokenizer>> make_sentencepiece_tokenizer(std::string_view serialized_model,
                                                                  TokenizerParts parts);

}  // namespace sieve::models
