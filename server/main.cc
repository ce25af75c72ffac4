// The `sieve` command: generate, tokenize, bench, serve and eval.

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "CLI/CLI.hpp"
#include "core/logging.h"
#include "kernels/cpu/cpu_features.h"
#include "server/cli_bench.h"
#include "server/cli_common.h"
#include "server/cli_eval.h"
#include "server/cli_generate.h"
#include "server/cli_serve.h"
#include "server/cli_tokenize.h"

namespace {

// What libgomp and OpenBLAS read once, before main, set from our own view of the machine; the
// process sets what is unset and restarts itself once (a variable set by the user is left alone):
// - OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin while they wait cost more than they save on
//   small or shared machines (measured on the 2-core dev machine: prefill 6.7x and decode 3.3x
//   slower than with sleeping threads), and a busy neighbour turns spinning into stalls.
// - OMP_NUM_THREADS and OPENBLAS_NUM_THREADS: the CPUs this process may use (affinity mask and
//   cgroup quota), not the machine's: one pool, since OpenBLAS (the OpenMP build) runs on it too.
// - OPENBLAS_CORETYPE from our cpuid: Debian's OpenBLAS 0.3.21 does not know recent CPUs (a
//   Sapphire Rapids runs its SSE3 kernels) and says nothing.
void prepare_runtime_environment(char** argv) {
  bool changed = false;
  auto set_default = [&changed](const char* name, const std::string& value) {
    if (value.empty() || std::getenv(name) != nullptr) return;
    ::setenv(name, value.c_str(), 1);
    changed = true;
  };
  const std::string threads = std::to_string(sieve::kernels::cpu::cpu_thread_budget());
  set_default("OMP_WAIT_POLICY", "PASSIVE");
  set_default("OMP_NUM_THREADS", threads);
  set_default("OPENBLAS_NUM_THREADS", threads);
  set_default("OPENBLAS_CORETYPE",
              sieve::kernels::cpu::openblas_coretype_for(sieve::kernels::cpu::cpu_features()));
  if (changed) ::execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

}  // namespace

int main(int argc, char** argv) {
  prepare_runtime_environment(argv);
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
