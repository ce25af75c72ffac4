#pragma once
// An asynchronous HTTP/1.1 server on Boost.Beast/Asio (header-only in Debian's libboost1.74-dev):
// a few I/O threads hold any number of idle or streaming connections, none with a thread of its
// own. It parses requests with limits (header and body size, read time), answers through a
// handler, and streams bodies that a DeferredBody produces over time (SSE, chunked encoding)
// while watching the socket, so a client that goes away cancels the work behind its response.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/status.h"

namespace sieve::server {

struct HttpRequest {
  std::string method;                                        // "GET", "POST", ...
  std::string target;                                        // path and query
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-case
  std::string body;
  std::chrono::steady_clock::time_point arrival;  // when the whole request had been read

  // The first value of header `name` (lower-case), or empty.
  std::string header(std::string_view name) const;
  // The target without its query string.
  std::string path() const;
};

// A response body produced over time (a generation). The session calls start() once, then
// pull() on its own strand whenever wake() was called; cancel() when the client went away.
class DeferredBody {
 public:
  virtual ~DeferredBody() = default;
  // `wake` may be called from any thread whenever pull() may have more.
  virtual void start(std::function<void()> wake) = 0;
  // Appends what is ready to `out`; true once the body is complete.
  virtual bool pull(std::string* out) = 0;
  // The status and content type of a buffered (non-streamed) body, read once it is complete.
  virtual int status() const { return 200; }
  // The client is gone: stop the work behind the body.
  virtual void cancel() = 0;
};

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // When set, the body comes from here: streamed as server-sent events with chunked encoding
  // (`stream`), or sent whole once complete.
  std::shared_ptr<DeferredBody> deferred;
  bool stream = false;
};

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  int num_threads = 2;
  size_t max_body_bytes = 8u << 20;
  size_t max_header_bytes = 64u << 10;
  std::chrono::seconds keep_alive_timeout{30};  // an idle connection's wait for a request
  std::chrono::seconds read_timeout{30};        // reading one request, once it has begun
  std::chrono::seconds write_timeout{30};       // a response write the client takes nothing of
  int max_connections = 10000;                  // further ones get a 503 and are closed
};

// Parses one whole HTTP/1.1 request from `bytes` with the limits the server applies (a test and
// fuzzing entry point; the server parses the same way, as bytes arrive). INVALID_ARGUMENT names
// what is wrong: malformed, incomplete, or past a limit.
StatusOr<HttpRequest> parse_http_request(std::string_view bytes, const HttpServerOptions& options);

class HttpServer {
 public:
  // The handler runs on an I/O thread and must not block (it starts generations, never waits).
  using Handler = std::function<HttpReply(const HttpRequest&)>;

  // Binds and listens; the error names the address.
  static StatusOr<std::unique_ptr<HttpServer>> create(const HttpServerOptions& options,
                                                      Handler handler);
  ~HttpServer();

  // Starts the I/O threads.
  void start();
  // Stops accepting; open connections carry on.
  void stop_accepting();
  // Closes every connection and joins the I/O threads.
  void stop();
  int port() const;
  int num_connections() const;
  // Connections in the middle of a response (a generation still streaming or being written).
  int num_responding() const;

  // A canned JSON error reply ({"error": {...}} already rendered into `body_json`).
  static HttpReply json_reply(int status, std::string body_json);

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sieve::server
