#include "server/cli_serve.h"

#include <arpa/inet.h>
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
#include "server/generation_config.h"
#include "server/grpc_service.h"
#include "server/http_api.h"
#include "server/http_server.h"
#include "spdlog/spdlog.h"

namespace sieve::server {
namespace {

struct ServeOptions {
  ModelOptions model;
  std::string host = "127.0.0.1";  // loopback unless --host says otherwise, as llama.cpp
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
  std::string generation_config = "auto";
  std::string override_generation_config;
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

// True for an address only this machine reaches (127.0.0.0/8, ::1), where serving without a key
// exposes nothing.
bool is_loopback(const std::string& host) {
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    return IN6_IS_ADDR_LOOPBACK(&v6) ||
           (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  }
  return false;
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
  CompressionSpec default_compression;
  if (!o.kv_compression.empty()) {
    ASSIGN_OR_RETURN(default_compression,
                     parse_compression_flag("--kv-compression", o.kv_compression));
    spdlog::info("default KV compression: {}", o.kv_compression);
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

  if (o.max_model_len == 0 && engine->max_model_len() < runner.files.config.context_length()) {
    spdlog::warn("the model's max seq len ({}) is larger than the {} tokens the KV cache can hold: "
                 "serving with max_model_len {} (longer requests get a 400); raise --kv-cache-gib "
                 "or --gpu-memory-utilization, or set --max-model-len to silence this",
                 runner.files.config.context_length(), engine->max_model_len(),
                 engine->max_model_len());
  }

  ASSIGN_OR_RETURN(GenerationDefaults generation_defaults,
                   load_generation_defaults(o.generation_config, runner.files.source,
                                            o.override_generation_config));
  if (generation_defaults.empty()) {
    spdlog::info("no generation defaults: a request's unset fields take vLLM's (temperature 1.0; "
                 "--override-generation-config sets others)");
  } else {
    spdlog::info("generation defaults from {}, for the fields a request leaves unset: {}",
                 generation_defaults.source, generation_defaults.describe());
  }

  ModelContext model;
  model.generation_defaults = std::move(generation_defaults);
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
  model.max_num_seqs = engine->input_limits().max_num_seqs;
  model.kv_pages_total = engine->stats().kv_pages_total.load();
  model.default_compression = default_compression;

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
    grpc_options.api_key = o.api_key;
    grpc_options.write_timeout = std::chrono::seconds(o.write_timeout_s);
    ASSIGN_OR_RETURN(grpc, GrpcServer::start(frontend, grpc_options));
  }
  if (!is_loopback(o.host) && o.api_key.empty()) {
    spdlog::warn("listening on {} without --api-key: anyone who reaches this address can use the "
                 "model (HTTP and gRPC); set --api-key or SIEVE_API_KEY, or bind 127.0.0.1",
                 o.host);
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
  cmd->add_option("--host", o.host,
                  "Address both servers listen on (0.0.0.0 or :: to expose them beyond this "
                  "machine; then set --api-key)")
      ->capture_default_str();
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
                  "Require 'Authorization: Bearer <key>' on HTTP and the same 'authorization' "
                  "metadata on gRPC (also from SIEVE_API_KEY); health stays open");
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
                  "Seconds a response may wait on a client that reads nothing, HTTP or gRPC "
                  "(stalled or half-open clients are cut off and their requests aborted)")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  cmd->add_option("--max-request-bytes", o.max_request_bytes, "Largest request body")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 32))
      ->capture_default_str();
  cmd->add_option("--max-connections", o.max_connections,
                  "Most open HTTP connections; further ones get a 503 and are closed")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--http-threads", o.http_threads, "HTTP I/O threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--kv-compression", o.kv_compression,
                  "Default compression object (JSON), e.g. '{\"method\": \"none\"}'");
  cmd->add_option("--generation-config", o.generation_config,
                  "Sampling defaults for fields a request leaves unset: auto (the model "
                  "directory's generation_config.json; a GGUF file has none), vllm (none), or a "
                  "directory holding a generation_config.json")
      ->capture_default_str();
  cmd->add_option("--override-generation-config", o.override_generation_config,
                  "JSON over those defaults, e.g. '{\"temperature\": 0}' (keys: temperature, "
                  "top_p, top_k, min_p, repetition_penalty, max_new_tokens)");
  cmd->callback([options, &exit_code] {
    const Status status = run_serve(*options);
    if (!status.ok()) exit_code = report_error(status);
  });
}

}  // namespace sieve::server
