#pragma once
// Hugging Face tokenizer files: tokenizer.json (the whole pipeline), tokenizer_config.json and
// generation_config.json (BOS/EOS, added-token flags, chat template, EOS ids).

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "models/tokenizer/added_vocabulary.h"
#include "models/tokenizer/tokenizer_base.h"

namespace sieve::models {

// What tokenizer_config.json and generation_config.json say about a tokenizer.
struct HfTokenizerConfig {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;
  std::string chat_template;
  std::vector<AddedToken> added_tokens;  // added_tokens_decoder
  std::vector<int32_t> eos_token_ids;    // generation_config.json
};

// Reads tokenizer_config.json's text into `config`; `file` names it in errors.
Status parse_tokenizer_config(std::string_view text, const std::string& file,
                              HfTokenizerConfig* config);
// Reads generation_config.json's eos_token_id (an id or a list) into `config`.
Status parse_generation_config(std::string_view text, const std::string& file,
                               HfTokenizerConfig* config);

// Builds a tokenizer from tokenizer.json's text. Supports the BPE model with the normalizers,
// pre-tokenizers, post-processors and decoders Llama-family tokenizers use; anything else is an
// Unimplemented error naming the field.
StatusOr<std::unique_ptr<Tokenizer>> parse_tokenizer_json(std::string_view text,
                                                          const std::string& file,
                                                          const HfTokenizerConfig& config);

// Sets BOS, EOS, extra stop ids and the chat template of `parts` from `config`, falling back
// to the post-processor's tokens and well-known token names. `parts.token_texts` and
// `added_tokens` must be final.
void apply_hf_config(const HfTokenizerConfig& config, TokenizerParts* parts);

}  // namespace sieve::models
