#pragma once
// A tokenizer's vocabulary as a model file states it, independent of the file format: GGUF
// metadata (tokenizer.ggml.*) is read into this struct, and tokenizers are built from it.

#include <cstdint>
#include <string>
#include <vector>

namespace sieve::models {

struct VocabData {
  std::string model;                // "gpt2" (byte-level BPE) or "llama" (SentencePiece)
  std::string pre;                  // pre-tokenizer name: "smollm", "llama-bpe", "qwen2", "gpt-2", ...
  std::vector<std::string> tokens;  // id -> token text as stored
  std::vector<float> scores;        // SentencePiece scores (may be empty for BPE)
  std::vector<int32_t> token_types; // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
  std::vector<std::string> merges;  // "a b" pairs, by rank (BPE)
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t eot_id = -1;              // end of turn, when the file names one
  int32_t unknown_id = -1;
  int32_t padding_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;    // SentencePiece: prepend "▁" to the text
  std::string chat_template;        // Jinja source, when the file carries one
};

}  // namespace sieve::models
