// The `sieve` command: generate, tokenize, bench, serve and eval.

#include <unistd.h>

#include <cstdlib>

#include "CLI/CLI.hpp"
#include "core/logging.h"
#include "server/cli_bench.h"
#include "server/cli_common.h"
#include "server/cli_eval.h"
#include "server/cli_generate.h"
#include "server/cli_serve.h"
#include "server/cli_tokenize.h"

namespace {

// OpenMP threads that spin while they wait cost more than they save on small or shared machines
// (measured on the 2-core dev machine: prefill 6.7x and decode 3.3x slower than with sleeping
// threads). libgomp reads its wait policy before main, so the process sets it and restarts
// itself once; an explicit OMP_WAIT_POLICY is left alone.
void ensure_passive_openmp_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

}  // namespace

int main(int argc, char** argv) {
  ensure_passive_openmp_waits(argv);
  CLI::App app{"Sieve: an LLM serving engine with per-request KV-cache compression"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str();
  int exit_code = 0;
  // The level applies before any subcommand runs (callbacks run after parsing).
  app.parse_complete_callback([&] {
    const sieve::Status status = sieve::set_log_level(log_level);
    if (!status.ok()) throw CLI::ValidationError("--log-level", std::string(status.message()));
  });
  sieve::server::register_generate(app, exit_code);
  sieve::server::register_tokenize(app, exit_code);
  sieve::server::register_bench(app, exit_code);
  sieve::server::register_serve(app, exit_code);
  sieve::server::register_eval(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
