#include "server/grpc_service.h"

#include <random>

#include "fmt/format.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "proto/sieve.grpc.pb.h"
#include "server/compression.h"
#include "server/grpc_request.h"
#include "spdlog/spdlog.h"

namespace sieve::server {

namespace {

constexpr char kServiceName[] = "sieve.v1.Sieve";
// How often a waiting Generate call checks for a cancel or an expired deadline.
constexpr std::chrono::milliseconds kCancelPoll{20};

class SieveService final : public v1::Sieve::Service {
 public:
  explicit SieveService(Frontend& frontend) : frontend_(frontend) {}

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    const auto arrival = std::chrono::steady_clock::now();
    auto engine_request = request_from_proto(*request, frontend_.model());
    if (!engine_request.ok()) {
      frontend_.count_rejected("invalid_argument");
      return to_grpc(engine_request.status());
    }
    std::string id = request->request_id();
    if (id.empty() || id.size() > 128) id = "grpc-" + random_hex();
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
      if (!writer->Write(response)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
      if (out->finished_request) {
        if (out->finish_reason == "error")
          return grpc::Status(grpc::StatusCode::INTERNAL, out->error);
        return grpc::Status::OK;
      }
    }
  }

  grpc::Status Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override {
    auto ids = tokenize_from_proto(*request, frontend_.model());
    if (!ids.ok()) return to_grpc(ids.status());
    for (int32_t id : *ids) response->add_token_ids(id);
    response->set_count(static_cast<int32_t>(ids->size()));
    response->set_max_model_len(frontend_.model().max_model_len);
    return grpc::Status::OK;
  }

  grpc::Status Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* request,
                          v1::DetokenizeResponse* response) override {
    const ModelContext& model = frontend_.model();
    if (!model.serves(request->model())) {
      return to_grpc(InvalidArgumentError("model: '" + request->model() + "' is not served here"));
    }
    if (!model.tokenizer) return to_grpc(InvalidArgumentError("the model has no tokenizer"));
    std::vector<int32_t> ids;
    for (int i = 0; i < request->token_ids_size(); ++i) {
      const int32_t id = request->token_ids(i);
      if (id < 0 || id >= model.config.vocab_size) {
        return to_grpc(InvalidArgumentError("token_ids: token id " + std::to_string(id) +
                                            " at position " + std::to_string(i) +
                                            " is outside the vocabulary"));
      }
      ids.push_back(id);
    }
    const bool skip = request->has_skip_special_tokens() ? request->skip_special_tokens() : true;
    response->set_text(model.tokenizer->decode(ids, skip));
    return grpc::Status::OK;
  }

  grpc::Status ModelInfo(grpc::ServerContext*, const v1::ModelInfoRequest*,
                         v1::ModelInfoResponse* response) override {
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

  Frontend& frontend_;
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
  impl->service = std::make_unique<SieveService>(frontend);
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
