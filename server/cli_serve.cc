#include "server/cli_serve.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "models/tokenizer/chat_template.h"
#include "server/cli_common.h"
#include "server/compression.h"
#include "server/frontend.h"
#include "server/grpc_service.h"
#include "server/http_api.h"
#include "server/http_server.h"
#include "spdlog/spdlog.h"

namespace sieve::server {
namespace {

struct ServeOptions {
  ModelOptions model;
  std::string host = "0.0.0.0";
  int port = 8000;
  int grpc_port = 50051;  // -1 = no gRPC server
  std::vector<std::string> served_model_names;
  int max_model_len = 0;
  int max_queue = 1024;
  std::string api_key;
  double shutdown_timeout_s = 30;
  int timeout_keep_alive_s = 60;
  int request_timeout_s = 30;
  int write_timeout_s = 30;
  int64_t max_request_bytes = 8 << 20;
  int max_connections = 10000;
  int http_threads = 2;
  std::string kv_compression;
};

// Serving thousands of connections needs as many descriptors as the hard limit allows.
void raise_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// Waits for SIGTERM or SIGINT (blocked in every thread, so only this wait sees them) up to
// `timeout`; true when one came.
bool wait_for_signal(const sigset_t& signals, std::chrono::milliseconds timeout) {
  timespec ts{static_cast<time_t>(timeout.count() / 1000),
              static_cast<long>((timeout.count() % 1000) * 1000000)};
  const int sig = sigtimedwait(&signals, nullptr, &ts);
  if (sig > 0) spdlog::info("received {}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  return sig > 0;
}

// Polls `done` every 20 ms until it holds or `timeout` passes; a further signal cuts it short.
bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout,
                const sigset_t& signals) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    if (wait_for_signal(signals, std::chrono::milliseconds(20))) return false;
  }
  return true;
}

StatusOr<std::unique_ptr<engine::Engine>> make_serving_engine(const LoadedRunner& runner,
                                                              const models::Tokenizer* tokenizer,
                                                              const ServeOptions& o) {
  engine::EngineConfig config;
  config.max_num_batched_tokens = o.model.max_num_batched_tokens;
  config.max_num_seqs = o.model.max_num_seqs;
  config.max_model_len = o.max_model_len;
  config.enable_prefix_caching = o.model.enable_prefix_caching;
  config.long_prefill_token_threshold = o.model.long_prefill_token_threshold;
  config.max_num_partial_prefills = o.model.max_num_partial_prefills;
  config.max_long_partial_prefills = o.model.max_long_partial_prefills;
  if (o.model.kv_cache_gib > 0) {
    config.kv_cache_bytes = static_cast<size_t>(o.model.kv_cache_gib * (1ull << 30));
  }
  std::vector<int32_t> eos(runner.files.config.eos_token_ids.begin(),
                           runner.files.config.eos_token_ids.end());
  if (tokenizer) eos = tokenizer->stop_token_ids();
  return engine::Engine::create(*runner.model, *runner.backend, tokenizer, eos, config);
}

Status run_serve(ServeOptions o) {
  if (o.api_key.empty()) {
    if (const char* key = std::getenv("SIEVE_API_KEY")) o.api_key = key;
  }
  if (!o.kv_compression.empty()) {
    auto json = nlohmann::json::parse(o.kv_compression, nullptr, false);
    if (json.is_discarded()) return InvalidArgumentError("--kv-compression: not valid JSON");
    auto spec = parse_compression(json);
    if (!spec.ok())
      return InvalidArgumentError("--kv-compression: " + std::string(spec.status().message()));
    spdlog::info("default KV compression: method {} (applied once policies land)", spec->method);
  }
  // Block the shutdown signals before any thread starts: every thread inherits the mask and
  // only wait_for_signal() receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  raise_file_limit();

  ASSIGN_OR_RETURN(LoadedRunner runner, load_runner(o.model));
  ASSIGN_OR_RETURN(std::unique_ptr<models::Tokenizer> tokenizer,
                   models::load_model_tokenizer(runner.files));
  ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine,
                   make_serving_engine(runner, tokenizer.get(), o));

  ModelContext model;
  model.served_model_names = o.served_model_names;
  if (model.served_model_names.empty()) {
    if (o.model.model == "default") model.served_model_names.push_back("SmolLM2-135M-Instruct");
    model.served_model_names.push_back(o.model.model);
  }
  model.tokenizer = tokenizer.get();
  if (tokenizer) {
    model.chat_template =
        models::chat_template_for(*tokenizer, architecture_hint(runner.files.config));
  }
  model.config = runner.files.config;
  model.source = runner.files.source;
  model.backend_name = runner.backend->name();
  model.max_model_len = engine->max_model_len();
  model.kv_pages_total = engine->stats().kv_pages_total.load();

  Frontend frontend(*engine, model, o.max_queue);
  HttpServerOptions http_options;
  http_options.host = o.host;
  http_options.port = o.port;
  http_options.num_threads = o.http_threads;
  http_options.max_body_bytes = static_cast<size_t>(o.max_request_bytes);
  http_options.keep_alive_timeout = std::chrono::seconds(o.timeout_keep_alive_s);
  http_options.read_timeout = std::chrono::seconds(o.request_timeout_s);
  http_options.write_timeout = std::chrono::seconds(o.write_timeout_s);
  http_options.max_connections = o.max_connections;
  ASSIGN_OR_RETURN(std::unique_ptr<HttpServer> http,
                   HttpServer::create(http_options, make_http_api(frontend, {o.api_key})));
  std::unique_ptr<GrpcServer> grpc;
  if (o.grpc_port >= 0) {
    GrpcServerOptions grpc_options;
    grpc_options.host = o.host;
    grpc_options.port = o.grpc_port;
    grpc_options.max_threads = std::max(64, o.model.max_num_seqs + o.max_queue + 16);
    ASSIGN_OR_RETURN(grpc, GrpcServer::start(frontend, grpc_options));
  }
  engine->start();
  http->start();
  spdlog::info("serving {} on http://{}:{} (OpenAI API){}{}", model.model_name(), o.host,
               http->port(), grpc ? ", grpc " + o.host + ":" + std::to_string(grpc->port()) : "",
               o.api_key.empty() ? "" : ", API key required");

  while (!wait_for_signal(signals, std::chrono::milliseconds(1000))) {
  }
  // Graceful shutdown: refuse new work, let what is in flight finish, then abort the rest.
  frontend.begin_shutdown();
  http->stop_accepting();
  if (grpc) grpc->set_not_serving();
  spdlog::info("shutting down: {} requests in flight, up to {} s to finish",
               frontend.num_in_flight(), o.shutdown_timeout_s);
  const auto grace = std::chrono::milliseconds(static_cast<int64_t>(o.shutdown_timeout_s * 1000));
  if (!wait_until([&] { return frontend.num_in_flight() == 0; }, grace, signals)) {
    spdlog::warn("aborting {} requests still in flight", frontend.num_in_flight());
    frontend.abort_all();
    wait_until([&] { return frontend.num_in_flight() == 0; }, std::chrono::seconds(5), signals);
  }
  // Let the last bytes of each response reach its client.
  wait_until([&] { return http->num_responding() == 0; }, std::chrono::seconds(2), signals);
  if (grpc) grpc->shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  http->stop();
  http.reset();
  engine->stop();
  spdlog::info("shut down");
  return OkStatus();
}

}  // namespace

void register_serve(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<ServeOptions>();
  ServeOptions& o = *options;
  CLI::App* cmd = app.add_subcommand("serve", "Serve the OpenAI-compatible HTTP API and gRPC");
  add_model_options(*cmd, o.model);
  cmd->add_option("--host", o.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o.port, "HTTP port (0: any free port, logged)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--grpc-port", o.grpc_port, "gRPC port (0: any free port; -1: no gRPC)")
      ->check(CLI::Range(-1, 65535))
      ->capture_default_str();
  cmd->add_option("--served-model-name", o.served_model_names,
                  "Model names the API accepts (repeatable); the first is reported");
  cmd->add_option("--max-model-len", o.max_model_len, "Context length (0: the model's)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--max-queue", o.max_queue,
                  "Most requests waiting for their first token; past it, 503 / "
                  "RESOURCE_EXHAUSTED at once (0: no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--api-key", o.api_key,
                  "Require 'Authorization: Bearer <key>' (also from SIEVE_API_KEY)");
  cmd->add_option("--shutdown-timeout", o.shutdown_timeout_s,
                  "Seconds requests in flight get to finish on SIGTERM/SIGINT")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--timeout-keep-alive", o.timeout_keep_alive_s,
                  "Seconds an idle HTTP connection is kept open")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  cmd->add_option("--request-timeout", o.request_timeout_s,
                  "Seconds a client gets to send one request (slow clients are cut off)")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  cmd->add_option("--write-timeout", o.write_timeout_s,
                  "Seconds a response may wait on a client that reads nothing (stalled or "
                  "half-open clients are cut off and their requests aborted)")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  cmd->add_option("--max-request-bytes", o.max_request_bytes, "Largest request body")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 32))
      ->capture_default_str();
  cmd->add_option("--max-connections", o.max_connections, "Most open HTTP connections")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--http-threads", o.http_threads, "HTTP I/O threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--kv-compression", o.kv_compression,
                  "Default compression object (JSON), e.g. '{\"method\": \"none\"}'");
  cmd->callback([options, &exit_code] {
    const Status status = run_serve(*options);
    if (!status.ok()) exit_code = report_error(status);
  });
}

}  // namespace sieve::server
