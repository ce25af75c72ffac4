#pragma once
// Hugging Face's BPE model with its normalizer and pre-tokenizer: byte-level BPE (GPT-2, Llama 3,
// Qwen2, SmolLM2) and the SentencePiece-style BPE with byte fallback that Llama 2 and Mistral
// tokenizer.json files describe.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "models/tokenizer/pre_tokenizer.h"
#include "models/tokenizer/tokenizer_base.h"

namespace sieve::models {

// The BPE model and the text pipeline before it.
struct BpeSpec {
  std::vector<std::pair<std::string, int32_t>> vocab;  // the model's own tokens (not added ones)
  std::vector<std::pair<std::string, std::string>> merges;  // by rank, as token texts
  bool byte_level = true;      // tokens spell bytes with GPT-2's byte-to-unicode mapping
  bool byte_fallback = false;  // unknown characters become <0xXX> tokens
  bool ignore_merges = false;  // a word that is a token is taken whole (Llama 3)
  bool fuse_unk = false;
  std::optional<int32_t> unk_id;
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
};

// Sets the normalizer, pre-tokenizer and ignore_merges that llama.cpp's tokenizer.ggml.pre names
// stand for, as those models' tokenizer.json files declare them: "gpt-2"/"default",
// "llama-bpe"/"llama3", "qwen2" (NFC too) and "smollm"/"starcoder"/"refact". Other names are an
// Unimplemented error naming the field.
Status apply_gguf_pre(std::string_view pre, BpeSpec* spec);

// Builds the tokenizer; an error names the merge or token that does not fit the vocabulary.
StatusOr<std::unique_ptr<Tokenizer>> make_bpe_tokenizer(TokenizerParts parts, BpeSpec spec);

}  // namespace sieve::models
