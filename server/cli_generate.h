#pragma once
// `sieve generate`: one prompt, one completion, on the CPU or CUDA backend.

#include "CLI/CLI.hpp"

namespace sieve::server {

// Registers the subcommand; it runs from its callback and sets `exit_code`.
void register_generate(CLI::App& app, int& exit_code);

}  // namespace sieve::server
