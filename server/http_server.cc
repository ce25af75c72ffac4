#include "server/http_server.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>

#include "boost/asio.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace sieve::server {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::string HttpRequest::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return "";
}

std::string HttpRequest::path() const { return target.substr(0, target.find('?')); }

HttpReply HttpServer::json_reply(int status, std::string body_json) {
  HttpReply reply;
  reply.status = status;
  reply.body = std::move(body_json);
  return reply;
}

namespace {

std::string error_body(const std::string& message) {
  return nlohmann::json{{"error",
                         {{"message", message},
                          {"type", "invalid_request_error"},
                          {"param", nullptr},
                          {"code", nullptr}}}}
      .dump();
}

std::string status_line(int status) {
  const auto reason = http::obsolete_reason(http::int_to_status(static_cast<unsigned>(status)));
  return fmt::format("HTTP/1.1 {} {}\r\n", status, std::string_view(reason.data(), reason.size()));
}

std::string head(int status, const std::string& content_type,
                 const std::vector<std::pair<std::string, std::string>>& headers, bool keep_alive) {
  std::string out = status_line(status);
  out += "Server: sieve\r\nContent-Type: " + content_type + "\r\n";
  for (const auto& [name, value] : headers) out += name + ": " + value + "\r\n";
  out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  return out;
}

// One chunk of the chunked transfer coding.
std::string chunk(const std::string& data) {
  return fmt::format("{:x}\r\n", data.size()) + data + "\r\n";
}

using Parser = http::request_parser<http::string_body>;

void configure(Parser& parser, const HttpServerOptions& options) {
  parser.body_limit(options.max_body_bytes);
  parser.header_limit(static_cast<uint32_t>(options.max_header_bytes));
}

HttpRequest to_request(http::request<http::string_body>&& request) {
  HttpRequest r;
  r.method = std::string(request.method_string());
  r.target = std::string(request.target());
  for (const auto& field : request) {
    std::string name(field.name_string());
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    r.headers.emplace_back(std::move(name), std::string(field.value()));
  }
  r.body = std::move(request.body());
  r.arrival = std::chrono::steady_clock::now();
  return r;
}

}  // namespace

StatusOr<HttpRequest> parse_http_request(std::string_view bytes, const HttpServerOptions& options) {
  Parser parser;
  configure(parser, options);
  parser.eager(true);
  beast::error_code ec;
  size_t offset = 0;
  while (!parser.is_done()) {
    const size_t used = parser.put(net::buffer(bytes.data() + offset, bytes.size() - offset), ec);
    offset += used;
    if (!ec && used == 0) ec = http::error::need_more;  // nothing taken: it needs more
    if (ec == http::error::need_more) {
      ec = {};
      if (offset < bytes.size() && used > 0) continue;
      if (!parser.got_some()) return InvalidArgumentError("malformed HTTP request: empty");
      parser.put_eof(ec);  // needs some bytes: it would accept an empty request
      if (!ec && !parser.is_done()) ec = http::error::partial_message;
    }
    if (ec) return InvalidArgumentError("malformed HTTP request: " + ec.message());
  }
  return to_request(parser.release());
}

struct HttpServer::Impl {
  HttpServerOptions options;
  Handler handler;
  std::atomic<int> connections{0};
  std::atomic<int> responding{0};
  // Declared after what sessions touch: handlers still queued are destroyed with io_context.
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  tcp::acceptor acceptor{net::make_strand(ioc)};
  net::steady_timer accept_retry{acceptor.get_executor()};
  std::vector<std::thread> threads;
  int port = 0;

  void accept();
};

namespace {

// One connection: reads requests, answers them one at a time, streams deferred bodies.
// Everything runs on the connection's strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const HttpServerOptions& options, const HttpServer::Handler& handler,
          std::atomic<int>& connections, std::atomic<int>& responding)
      : stream_(std::move(socket)),
        options_(options),
        handler_(handler),
        connections_(connections),
        responding_(responding) {
    ++connections_;
  }
  ~Session() {
    if (deferred_) deferred_->cancel();
    set_in_response(false);
    --connections_;
  }

  void start() {
    beast::error_code ec;
    stream_.socket().set_option(tcp::no_delay(true), ec);  // SSE chunks leave at once
    net::dispatch(stream_.get_executor(),
                  [self = shared_from_this()] { self->wait_for_request(); });
  }

 private:
  // Waits (up to the keep-alive timeout) for the first bytes of the next request.
  void wait_for_request() {
    if (closed_) return;
    parser_.emplace();
    configure(*parser_, options_);
    if (buffer_.size() > 0) return read_request();
    stream_.expires_after(options_.keep_alive_timeout);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec) return self->close();
                              self->buffer_.commit(n);
                              self->read_request();
                            });
  }

  // The header first: a client that sent `Expect: 100-continue` waits for the interim response
  // before it sends the body (curl does for bodies over 1 KiB, and otherwise waits a second).
  void read_request() {
    stream_.expires_after(options_.read_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec || closed_ || parser_->is_done()) return on_read(ec);
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      return net::async_write(stream_, net::buffer(kContinue),
                              [self = shared_from_this()](beast::error_code error, size_t) {
                                if (error) return self->close();
                                self->read_body();
                              });
    }
    read_body();
  }

  void read_body() {
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (closed_) return;
    if (ec == http::error::body_limit) {
      return reply_error_and_close(
          400, fmt::format("request body exceeds the limit of {} bytes", options_.max_body_bytes));
    }
    if (ec == http::error::header_limit) {
      return reply_error_and_close(431, "request headers are too large");
    }
    if (ec && ec.category() == http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return reply_error_and_close(400, "malformed HTTP request: " + ec.message());
    }
    if (ec) return close();  // the client left, or timed out
    keep_alive_ = parser_->get().keep_alive();
    HttpRequest r = to_request(parser_->release());
    head_request_ = r.method == "HEAD";
    stream_.expires_never();
    HttpReply reply;
    try {
      reply = handler_(r);
    } catch (const std::exception& e) {
      spdlog::error("HTTP handler failed on {} {}: {}", r.method, r.target, e.what());
      reply = HttpServer::json_reply(500, error_body("internal error"));
    }
    respond(std::move(reply));
  }

  void set_in_response(bool value) {
    if (value != in_response_) responding_ += value ? 1 : -1;
    in_response_ = value;
  }

  void respond(HttpReply reply) {
    set_in_response(true);
    if (!reply.deferred) {
      std::string text = head(reply.status, reply.content_type, reply.headers, keep_alive_);
      // A HEAD reply has the headers of its GET, Content-Length included, and no body.
      text += fmt::format("Content-Length: {}\r\n\r\n", reply.body.size());
      if (!head_request_) text += reply.body;
      pending_ = std::move(text);
      body_complete_ = true;
      return flush();
    }
    deferred_ = std::move(reply.deferred);
    streaming_ = reply.stream;
    reply_headers_ = std::move(reply.headers);
    content_type_ = reply.content_type;
    body_complete_ = false;
    if (streaming_) {
      pending_ = head(200, content_type_, reply_headers_, keep_alive_) +
                 "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
      flush();
    }
    watch();
    auto wake_pending = std::make_shared<std::atomic<bool>>(false);
    deferred_->start([weak = weak_from_this(), executor = stream_.get_executor(), wake_pending] {
      if (wake_pending->exchange(true)) return;  // one wake in flight is enough
      net::post(executor, [weak, wake_pending] {
        wake_pending->store(false);
        if (auto self = weak.lock()) self->on_wake();
      });
    });
  }

  // Pulls what the deferred body has ready and writes it.
  void on_wake() {
    if (closed_ || !deferred_ || body_complete_) return;
    std::string data;
    const bool complete = deferred_->pull(&data);
    if (streaming_) {
      if (!data.empty()) pending_ += chunk(data);
      if (complete) pending_ += "0\r\n\r\n";
    } else {
      buffered_ += data;
      if (complete) {
        pending_ = head(deferred_->status(), content_type_, reply_headers_, keep_alive_) +
                   fmt::format("Content-Length: {}\r\n\r\n", buffered_.size());
        if (!head_request_) pending_ += buffered_;
        buffered_.clear();
      }
    }
    body_complete_ = complete;
    flush();
  }

  void flush() {
    if (closed_ || writing_) return;
    if (pending_.empty()) {
      if (body_complete_ && in_response_) finish_response();
      return;
    }
    writing_ = true;
    writing_buf_.swap(pending_);
    pending_.clear();
    written_ = 0;
    write_some();
  }

  // Writes the rest of writing_buf_ piece by piece. The write timeout restarts with every piece
  // the client takes, so it cuts off a client that stops reading (stalled or half-open), never
  // one that reads a long response slowly.
  void write_some() {
    stream_.expires_after(options_.write_timeout);
    stream_.async_write_some(
        net::buffer(writing_buf_.data() + written_, writing_buf_.size() - written_),
        [self = shared_from_this()](beast::error_code ec, size_t n) {
          if (ec) {
            self->writing_ = false;
            if (ec == beast::error::timeout) {
              spdlog::info("client stopped reading for {} s: closing its connection",
                           self->options_.write_timeout.count());
            }
            return self->close();  // gone, or not reading: timed out
          }
          self->written_ += n;
          if (self->written_ < self->writing_buf_.size()) return self->write_some();
          self->writing_ = false;
          self->stream_.expires_never();
          self->writing_buf_.clear();
          self->flush();
        });
  }

  // Reads while a response is in progress: an end of stream or an error means the client left,
  // and the work behind the response is cancelled at once. Bytes that arrive (a pipelined
  // request) stay in the buffer for the next parse.
  void watch() {
    if (watching_ || closed_ || buffer_.size() >= options_.max_header_bytes) return;
    watching_ = true;
    stream_.socket().async_read_some(
        buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
          self->watching_ = false;
          if (n > 0) self->buffer_.commit(n);
          if (ec == net::error::operation_aborted && self->resume_after_watch_) {
            self->resume_after_watch_ = false;
            return self->wait_for_request();
          }
          if (ec) {
            SPDLOG_DEBUG("client went away during a response: {}", ec.message());
            return self->close();
          }
          if (self->in_response_) return self->watch();
          self->wait_for_request();
        });
  }

  void finish_response() {
    set_in_response(false);
    deferred_.reset();
    streaming_ = false;
    body_complete_ = false;
    if (!keep_alive_) return close_gracefully();
    if (watching_) {
      resume_after_watch_ = true;  // the watch's completion starts the next read
      beast::error_code ec;
      stream_.socket().cancel(ec);
      return;
    }
    wait_for_request();
  }

  void reply_error_and_close(int status, const std::string& message) {
    keep_alive_ = false;
    HttpReply reply = HttpServer::json_reply(status, error_body(message));
    respond(std::move(reply));
  }

  // Sends FIN and drains what the client still sends for a moment before closing, so a reply
  // to a request whose body was not read (too large) is not lost to a reset.
  void close_gracefully() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(2));
    drain();
  }

  void drain() {
    stream_.async_read_some(net::buffer(drain_buf_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->stream_.close();
                              self->drain();
                            });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    set_in_response(false);
    if (deferred_) {
      deferred_->cancel();
      deferred_.reset();
    }
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const HttpServerOptions& options_;
  const HttpServer::Handler& handler_;
  std::atomic<int>& connections_;
  std::atomic<int>& responding_;

  std::shared_ptr<DeferredBody> deferred_;
  std::vector<std::pair<std::string, std::string>> reply_headers_;
  std::string content_type_;
  std::string pending_;      // bytes ready to write
  std::string writing_buf_;  // bytes being written
  size_t written_ = 0;       // of writing_buf_
  std::string buffered_;     // a non-streamed deferred body, until complete
  std::array<char, 4096> drain_buf_;
  bool keep_alive_ = false;
  bool head_request_ = false;
  bool in_response_ = false;
  bool streaming_ = false;
  bool body_complete_ = false;
  bool writing_ = false;
  bool watching_ = false;
  bool resume_after_watch_ = false;
  bool closed_ = false;
};

// A connection past --max-connections: answered 503 and closed, so its client learns why rather
// than seeing the connection drop. Sends FIN after the reply and drains what the client sent for
// up to 2 s, so the reply is not lost to a reset over unread request bytes.
class Refusal : public std::enable_shared_from_this<Refusal> {
 public:
  explicit Refusal(tcp::socket socket) : stream_(std::move(socket)) {}

  void start(int max_connections) {
    const std::string body = error_body(fmt::format(
        "the server has reached its limit of {} open connections (--max-connections); retry "
        "later",
        max_connections));
    reply_ = head(503, "application/json", {{"Retry-After", "1"}}, /*keep_alive=*/false) +
             fmt::format("Content-Length: {}\r\n\r\n", body.size()) + body;
    stream_.expires_after(std::chrono::seconds(2));
    net::async_write(stream_, net::buffer(reply_),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->stream_.close();
                       self->stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
                       self->drain();
                     });
  }

 private:
  void drain() {
    stream_.async_read_some(net::buffer(drain_buf_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->stream_.close();
                              self->drain();
                            });
  }

  beast::tcp_stream stream_;
  std::string reply_;
  std::array<char, 4096> drain_buf_;
};

}  // namespace

void HttpServer::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (!acceptor.is_open()) return;
    if (ec) {
      // Out of file descriptors, most likely: wait a little instead of spinning.
      spdlog::warn("HTTP accept failed: {}", ec.message());
      accept_retry.expires_after(std::chrono::milliseconds(100));
      accept_retry.async_wait([this](beast::error_code) { accept(); });
      return;
    }
    if (connections.load() >= options.max_connections) {
      std::make_shared<Refusal>(std::move(socket))->start(options.max_connections);
    } else {
      std::make_shared<Session>(std::move(socket), options, handler, connections, responding)
          ->start();
    }
    accept();
  });
}

StatusOr<std::unique_ptr<HttpServer>> HttpServer::create(const HttpServerOptions& options,
                                                         Handler handler) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->handler = std::move(handler);
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(options.host, ec);
  if (ec) return InvalidArgumentError("--host: '" + options.host + "' is not an IP address");
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(options.port));
  const std::string where = options.host + ":" + std::to_string(options.port);
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError("cannot listen on " + where + ": " + ec.message());
  impl->port = impl->acceptor.local_endpoint(ec).port();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  impl_->work.emplace(impl_->ioc.get_executor());
  impl_->accept();
  for (int i = 0; i < std::max(1, impl_->options.num_threads); ++i) {
    impl_->threads.emplace_back([this] { impl_->ioc.run(); });
  }
}

void HttpServer::stop_accepting() {
  net::post(impl_->acceptor.get_executor(), [impl = impl_.get()] {
    beast::error_code ec;
    impl->acceptor.close(ec);
    impl->accept_retry.cancel();
  });
}

void HttpServer::stop() {
  if (impl_->threads.empty()) return;
  impl_->work.reset();
  impl_->ioc.stop();
  for (std::thread& t : impl_->threads) t.join();
  impl_->threads.clear();
}

int HttpServer::port() const { return impl_->port; }

int HttpServer::num_connections() const { return impl_->connections.load(); }

int HttpServer::num_responding() const { return impl_->responding.load(); }

}  // namespace sieve::server
