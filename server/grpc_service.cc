#include "server/grpc_service.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "engine/input_processor.h"
#include "fmt/format.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "proto/sieve.grpc.pb.h"
#include "server/auth.h"
#include "server/compression.h"
#include "server/grpc_request.h"
#include "spdlog/spdlog.h"

namespace sieve::server {

namespace {

constexpr char kServiceName[] = "sieve.v1.Sieve";
// How often a waiting Generate call checks for a cancel or an expired deadline.
constexpr std::chrono::milliseconds kCancelPoll{20};

// Cancels calls whose Write has waited on the client past the write timeout. The synchronous
// API's Write blocks while the client reads nothing (HTTP/2 flow control) and has no deadline of
// its own; cancelling the call from another thread (ServerContext::TryCancel) unblocks it.
class StallWatchdog {
 public:
  explicit StallWatchdog(std::chrono::milliseconds timeout)
      : timeout_(timeout), thread_([this] { run(); }) {}
  ~StallWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  // `context` is writing from now until end_write(); `id` names its request in the log.
  void begin_write(grpc::ServerContext* context, const std::string& id) {
    std::lock_guard<std::mutex> lock(mutex_);
    writing_[context] = {std::chrono::steady_clock::now(), &id};
  }
  void end_write(grpc::ServerContext* context) {
    std::lock_guard<std::mutex> lock(mutex_);
    writing_.erase(context);
  }

 private:
  struct Write {
    std::chrono::steady_clock::time_point began;
    const std::string* id;
  };

  // Cancelling under the mutex: end_write() waits for it, so the context is alive meanwhile.
  void run() {
    const auto period = std::clamp<std::chrono::milliseconds>(timeout_ / 4, std::chrono::milliseconds(10),
                                                              std::chrono::milliseconds(250));
    std::unique_lock<std::mutex> lock(mutex_);
    while (!wake_.wait_for(lock, period, [this] { return stop_; })) {
      const auto now = std::chrono::steady_clock::now();
      for (auto it = writing_.begin(); it != writing_.end();) {
        if (now - it->second.began < timeout_) {
          ++it;
          continue;
        }
        spdlog::info("gRPC client of request {} stopped reading for {:.1f} s: cancelling its call",
                     *it->second.id, std::chrono::duration<double>(timeout_).count());
        it->first->TryCancel();
        it = writing_.erase(it);
      }
    }
  }

  const std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::unordered_map<grpc::ServerContext*, Write> writing_;
  std::thread thread_;  // last: it starts once the rest is built
};

class SieveService final : public v1::Sieve::Service {
 public:
  SieveService(Frontend& frontend, const GrpcServerOptions& options)
      : frontend_(frontend), api_key_(options.api_key), watchdog_(options.write_timeout) {}

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    const auto arrival = std::chrono::steady_clock::now();
    if (!authorized(*context)) return unauthenticated();
    auto engine_request = request_from_proto(*request, frontend_.model());
    if (!engine_request.ok()) {
      frontend_.count_rejected("invalid_argument");
      return to_grpc(engine_request.status());
    }
    std::string id = clean_request_id(request->request_id());
    if (id.empty()) id = "grpc-" + random_hex();
    std::vector<engine::Request> requests;
    requests.push_back(std::move(*engine_request));
    auto tracked = frontend_.submit(std::move(requests), id, arrival);
    if (!tracked.ok()) return to_grpc(tracked.status());
    TrackedRequest& t = *tracked->front();
    // Returning before the last output drops `tracked`, which aborts the engine request.
    while (true) {
      if (context->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client or deadline");
      }
      std::optional<engine::RequestOutput> out = t.next(kCancelPoll);
      if (!out) continue;
      v1::GenerateResponse response;
      response.set_request_id(id);
      output_to_proto(*out, &response);
      watchdog_.begin_write(context, id);
      const bool written = writer->Write(response);
      watchdog_.end_write(context);
      if (!written) {
        return grpc::Status(grpc::StatusCode::CANCELLED,
                            "the client went away or stopped reading");
      }
      if (out->finished_request) {
        if (out->finish_reason == "error")
          return grpc::Status(grpc::StatusCode::INTERNAL, out->error);
        return grpc::Status::OK;
      }
    }
  }

  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override {
    if (!authorized(*context)) return unauthenticated();
    auto ids = tokenize_from_proto(*request, frontend_.model());
    if (!ids.ok()) return to_grpc(ids.status());
    for (int32_t id : *ids) response->add_token_ids(id);
    response->set_count(static_cast<int32_t>(ids->size()));
    response->set_max_model_len(frontend_.model().max_model_len);
    return grpc::Status::OK;
  }

  grpc::Status Detokenize(grpc::ServerContext* context, const v1::DetokenizeRequest* request,
                          v1::DetokenizeResponse* response) override {
    if (!authorized(*context)) return unauthenticated();
    const ModelContext& model = frontend_.model();
    if (!model.serves(request->model())) {
      return to_grpc(InvalidArgumentError("model: '" + request->model() + "' is not served here"));
    }
    if (!model.tokenizer) return to_grpc(InvalidArgumentError("the model has no tokenizer"));
    std::vector<int32_t> ids;
    for (int i = 0; i < request->token_ids_size(); ++i) {
      const int32_t id = request->token_ids(i);
      const Status valid = engine::check_token_id(id, i, model.config.vocab_size, "token_ids");
      if (!valid.ok()) return to_grpc(valid);
      ids.push_back(id);
    }
    const bool skip = request->has_skip_special_tokens() ? request->skip_special_tokens() : true;
    response->set_text(model.tokenizer->decode(ids, skip));
    return grpc::Status::OK;
  }

  grpc::Status ModelInfo(grpc::ServerContext* context, const v1::ModelInfoRequest*,
                         v1::ModelInfoResponse* response) override {
    if (!authorized(*context)) return unauthenticated();
    const ModelContext& m = frontend_.model();
    response->set_model(m.model_name());
    response->set_source(m.source);
    response->set_architecture(m.config.architecture_name);
    response->set_vocab_size(m.config.vocab_size);
    response->set_max_model_len(m.max_model_len);
    response->set_num_layers(m.config.num_layers);
    response->set_hidden_size(m.config.hidden_size);
    response->set_num_kv_heads(m.config.num_kv_heads);
    response->set_head_dim(m.config.head_dim);
    if (m.tokenizer) {
      for (int32_t id : m.tokenizer->stop_token_ids()) response->add_eos_token_ids(id);
    } else {
      for (int id : m.config.eos_token_ids) response->add_eos_token_ids(id);
    }
    response->set_backend(m.backend_name);
    response->set_kv_pages_total(m.kv_pages_total);
    for (const std::string& method : compression_methods())
      response->add_compression_methods(method);
    for (const std::string& format : kv_formats()) response->add_kv_formats(format);
    response->set_version(sieve_version());
    return grpc::Status::OK;
  }

 private:
  static std::string random_hex() {
    thread_local std::mt19937_64 rng(std::random_device{}());
    return fmt::format("{:016x}", rng());
  }

  // The metadata `authorization` (gRPC lower-cases keys) checked as HTTP's header is.
  bool authorized(const grpc::ServerContext& context) const {
    if (api_key_.empty()) return true;
    const auto& metadata = context.client_metadata();
    const auto it = metadata.find("authorization");
    if (it == metadata.end()) return false;
    return is_authorized(std::string_view(it->second.data(), it->second.size()), api_key_);
  }

  grpc::Status unauthenticated() {
    frontend_.count_rejected("unauthenticated");
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing or wrong API key: send the metadata 'authorization: Bearer <key>'");
  }

  Frontend& frontend_;
  const std::string api_key_;
  StallWatchdog watchdog_;
};

}  // namespace

struct GrpcServer::Impl {
  std::unique_ptr<SieveService> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::start(Frontend& frontend,
                                                        const GrpcServerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->service = std::make_unique<SieveService>(frontend, options);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = options.host.find(':') != std::string::npos
                                  ? "[" + options.host + "]:" + std::to_string(options.port)
                                  : options.host + ":" + std::to_string(options.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &impl->port);
  builder.RegisterService(impl->service.get());
  grpc::ResourceQuota quota("sieve");
  quota.SetMaxThreads(std::max(8, options.max_threads));
  builder.SetResourceQuota(quota);
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    return absl::UnavailableError("cannot listen for gRPC on " + address);
  }
  grpc::HealthCheckServiceInterface* health = impl->server->GetHealthCheckService();
  if (health) {
    health->SetServingStatus(true);
    health->SetServingStatus(kServiceName, true);
  }
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(impl)));
}

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcServer::~GrpcServer() {
  if (impl_->server) shutdown(std::chrono::system_clock::now());
}

void GrpcServer::set_not_serving() {
  if (auto* health = impl_->server->GetHealthCheckService()) {
    health->SetServingStatus(false);
    health->SetServingStatus(kServiceName, false);
  }
}

void GrpcServer::shutdown(std::chrono::system_clock::time_point deadline) {
  if (!impl_->server) return;
  impl_->server->Shutdown(deadline);
  impl_->server->Wait();
  impl_->server.reset();
}

int GrpcServer::port() const { return impl_->port; }

}  // namespace sieve::server
