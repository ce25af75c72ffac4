#pragma once
// `sieve serve`: the OpenAI-compatible HTTP API and the gRPC API over one engine, with vLLM's
// flag names where vLLM has one. SIGTERM or SIGINT shuts down gracefully: stop accepting, let
// requests in flight finish within --shutdown-timeout, abort the rest, exit 0.

#include "CLI/CLI.hpp"

namespace sieve::server {

// Registers the subcommand; it runs from its callback and sets `exit_code`.
void register_serve(CLI::App& app, int& exit_code);

}  // namespace sieve::server
