#pragma once
// `sieve tokenize`: a model's tokenizer on text, as Hugging Face's `tokenizers` would run it.

#include "CLI/CLI.hpp"

namespace sieve::server {

void register_tokenize(CLI::App& app, int& exit_code);

}  // namespace sieve::server
