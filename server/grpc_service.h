#pragma once
// The gRPC server: the sieve.v1.Sieve service over the frontend, with the standard
// grpc.health.v1 health service and server reflection on the same port. A client cancel or an
// expired deadline aborts the request in the engine within one poll (20 ms) and frees its pages;
// so does a client that stops reading for the write timeout. With an API key every sieve.v1 call
// needs the metadata `authorization: Bearer <key>` (UNAUTHENTICATED otherwise); health and
// reflection stay open, as HTTP's /health does, for load balancers and tooling.

#include <chrono>
#include <memory>
#include <string>

#include "core/status.h"
#include "server/frontend.h"

namespace sieve::server {

struct GrpcServerOptions {
  std::string host = "127.0.0.1";
  int port = 50051;
  int max_threads = 512;  // one per active call (the synchronous API); more get RESOURCE_EXHAUSTED
  std::string api_key;    // empty: no authentication
  // A streamed response the client takes nothing of for this long is cancelled (HTTP's
  // --write-timeout), its engine request aborted.
  std::chrono::milliseconds write_timeout{30000};
};

class GrpcServer {
 public:
  // Builds, binds and starts serving. `frontend` outlives the server.
  static StatusOr<std::unique_ptr<GrpcServer>> start(Frontend& frontend,
                                                     const GrpcServerOptions& options);
  ~GrpcServer();

  // Health turns NOT_SERVING (the start of a graceful shutdown).
  void set_not_serving();
  // Stops, letting calls run until `deadline`, then cancelling them.
  void shutdown(std::chrono::system_clock::time_point deadline);
  int port() const;

 private:
  struct Impl;
  explicit GrpcServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sieve::server
