#pragma once
// `sieve bench throughput`: offline throughput on random prompts, as vLLM's
// benchmark_throughput measures it (every request queued at once, fixed input and output
// lengths, EOS ignored).

#include "CLI/CLI.hpp"

namespace sieve::server {

void register_bench(CLI::App& app, int& exit_code);

}  // namespace sieve::server
