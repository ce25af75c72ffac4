#pragma once
// `sieve eval`: the KV-compression quality harness (eval/) run against the engine in-process.

#include "CLI/CLI.hpp"

namespace sieve::server {

// Registers the subcommand; it runs from its callback and sets `exit_code`.
void register_eval(CLI::App& app, int& exit_code);

}  // namespace sieve::server
