// The asynchronous HTTP server over real sockets on loopback: keep-alive and pipelining, the
// body and header limits, malformed requests, slow clients cut off, deferred bodies streamed
// with chunked encoding, a client that leaves mid-stream cancelling the work behind it, and one
// that stops reading cut off by the write timeout (but not one that reads slowly).

#include "server/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>

namespace sieve::server {
namespace {

// A body that a test thread produces piece by piece.
class PieceBody : public DeferredBody {
 public:
  void start(std::function<void()> wake) override {
    bool ready = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_ = wake;
      ready = !ready_.empty() || complete_;
    }
    if (ready) wake();
  }
  bool pull(std::string* out) override {
    std::lock_guard<std::mutex> lock(mutex_);
    *out += ready_;
    ready_.clear();
    return complete_;
  }
  void cancel() override { cancelled = true; }

  void produce(const std::string& piece, bool last) {
    std::function<void()> wake;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_ += piece;
      complete_ = last;
      wake = wake_;
    }
    if (wake) wake();
  }
  bool started() {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<bool>(wake_);
  }

  std::atomic<bool> cancelled{false};

 private:
  std::mutex mutex_;
  std::function<void()> wake_;
  std::string ready_;
  bool complete_ = false;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void start(HttpServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    options.num_threads = 2;
    auto server = HttpServer::create(options, [this](const HttpRequest& r) {
      if (r.path() == "/stream" || r.path() == "/buffered") {
        HttpReply reply;
        reply.stream = r.path() == "/stream";
        reply.content_type = "text/event-stream";
        reply.deferred = body_;
        return reply;
      }
      return HttpServer::json_reply(200, "{\"echo\":\"" + r.method + " " + r.target + " " +
                                             std::to_string(r.body.size()) + "\"}");
    });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    server_->start();
  }

  // `small_window`: a tiny receive buffer and segment size, so the server's writes block after a
  // few tens of kilobytes the client has not read (not megabytes, as loopback would allow).
  int connect_client(bool small_window = false) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (small_window) {
      const int bytes = 1;  // the kernel's minimum
      const int mss = 536;
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
      setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(mss));
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    timeval timeout{10, 0};  // a broken server fails the test instead of hanging it
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    return fd;
  }

  static void send_all(int fd, const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<size_t>(n);
    }
  }

  // Reads until `marker` has been seen `count` times, or the peer closes; returns what came.
  static std::string read_until(int fd, const std::string& marker, int count = 1,
                                bool* closed = nullptr) {
    std::string data;
    char buf[4096];
    while (true) {
      int seen = 0;
      for (size_t pos = data.find(marker); pos != std::string::npos;
           pos = data.find(marker, pos + 1)) {
        ++seen;
      }
      if (seen >= count) break;
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) {
        if (closed) *closed = true;
        break;
      }
      data.append(buf, static_cast<size_t>(n));
    }
    return data;
  }

  std::shared_ptr<PieceBody> body_ = std::make_shared<PieceBody>();
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, AnswersSeveralRequestsOnOneKeptAliveConnection) {
  start();
  const int fd = connect_client();
  send_all(fd, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string first = read_until(fd, "}");
  EXPECT_NE(first.find("HTTP/1.1 200 OK"), std::string::npos);
  EXPECT_NE(first.find("GET /a 0"), std::string::npos);
  // Two pipelined requests at once: two answers, in order.
  send_all(fd,
           "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
           "GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string both = read_until(fd, "}", 2);
  EXPECT_LT(both.find("POST /b 3"), both.find("GET /c 0"));
  close(fd);
}

TEST_F(HttpServerTest, BodyOverTheLimitIsA400AndTheConnectionCloses) {
  HttpServerOptions options;
  options.max_body_bytes = 1000;
  start(options);
  const int fd = connect_client();
  send_all(fd,
           "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + std::string(5000, 'a'));
  bool closed = false;
  const std::string reply = read_until(fd, "\r\n\r\nnever", 1, &closed);
  EXPECT_NE(reply.find("HTTP/1.1 400"), std::string::npos) << reply;
  EXPECT_NE(reply.find("exceeds the limit of 1000 bytes"), std::string::npos);
  EXPECT_TRUE(closed);
  close(fd);
}

TEST_F(HttpServerTest, MalformedRequestIsA400) {
  start();
  const int fd = connect_client();
  send_all(fd, "NOT HTTP AT ALL\r\n\r\n");
  bool closed = false;
  const std::string reply = read_until(fd, "\r\n\r\nnever", 1, &closed);
  EXPECT_NE(reply.find("HTTP/1.1 400"), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"error\""), std::string::npos);
  close(fd);
}

TEST_F(HttpServerTest, SlowAndIdleClientsAreCutOff) {
  HttpServerOptions options;
  options.read_timeout = std::chrono::seconds(1);
  options.keep_alive_timeout = std::chrono::seconds(1);
  start(options);
  const int slow = connect_client();
  send_all(slow, "GET / HTTP/1.1\r\nHost:");  // and never the rest
  const int idle = connect_client();
  bool slow_closed = false, idle_closed = false;
  read_until(slow, "never", 1, &slow_closed);
  read_until(idle, "never", 1, &idle_closed);
  EXPECT_TRUE(slow_closed);
  EXPECT_TRUE(idle_closed);
  close(slow);
  close(idle);
}

TEST_F(HttpServerTest, DeferredBodiesStreamChunkedOrArriveWhole) {
  start();
  const int fd = connect_client();
  send_all(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string head = read_until(fd, "\r\n\r\n");
  EXPECT_NE(head.find("Transfer-Encoding: chunked"), std::string::npos);
  body_->produce("data: 1\n\n", false);
  EXPECT_NE(read_until(fd, "data: 1").find("data: 1"), std::string::npos);
  body_->produce("data: 2\n\n", true);
  const std::string rest = read_until(fd, "0\r\n\r\n");
  EXPECT_NE(rest.find("data: 2"), std::string::npos);
  EXPECT_FALSE(body_->cancelled);

  // The same connection, a buffered deferred body: one response with Content-Length.
  body_ = std::make_shared<PieceBody>();
  send_all(fd, "GET /buffered HTTP/1.1\r\nHost: x\r\n\r\n");
  while (!body_->started()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  body_->produce("part1,", false);
  body_->produce("part2", true);
  const std::string whole = read_until(fd, "part2");
  EXPECT_NE(whole.find("Content-Length: 11"), std::string::npos) << whole;
  EXPECT_NE(whole.find("part1,part2"), std::string::npos);
  close(fd);
}

TEST_F(HttpServerTest, AClientLeavingMidStreamCancelsTheBody) {
  start();
  const int fd = connect_client();
  send_all(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
  read_until(fd, "\r\n\r\n");
  body_->produce("data: 1\n\n", false);
  read_until(fd, "data: 1");
  close(fd);
  for (int i = 0; i < 500 && !body_->cancelled; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(body_->cancelled);
  for (int i = 0; i < 500 && server_->num_connections() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server_->num_connections(), 0);
}

TEST_F(HttpServerTest, AClientThatStopsReadingIsCutOffAndItsBodyCancelled) {
  HttpServerOptions options;
  options.write_timeout = std::chrono::seconds(1);
  start(options);
  const int fd = connect_client(/*small_window=*/true);
  send_all(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
  read_until(fd, "\r\n\r\n");
  // Far more than the socket buffers hold, and the client reads none of it.
  for (int i = 0; i < 64 && !body_->cancelled; ++i) {
    body_->produce("data: " + std::string(16 << 10, 'x') + "\n\n", false);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (int i = 0; i < 1000 && !body_->cancelled; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(body_->cancelled);
  for (int i = 0; i < 500 && server_->num_connections() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server_->num_connections(), 0);
  close(fd);
}

TEST_F(HttpServerTest, ASlowButSteadyReaderGetsAResponseLongerThanTheWriteTimeout) {
  HttpServerOptions options;
  options.write_timeout = std::chrono::seconds(1);
  start(options);
  const int fd = connect_client(/*small_window=*/true);
  send_all(fd, "GET /buffered HTTP/1.1\r\nHost: x\r\n\r\n");
  while (!body_->started()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // One write of 256 KiB through a small window, with a pause before each read: the response
  // takes over a second to leave, but the client never stops reading for long.
  const std::string payload(256 << 10, 'y');
  body_->produce(payload + "END", true);
  std::string data;
  std::vector<char> buf(32 << 10);
  const auto start = std::chrono::steady_clock::now();
  while (data.find("END") == std::string::npos) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    data.append(buf.data(), static_cast<size_t>(n));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(data.find(payload + "END"), std::string::npos)
      << data.size() << " bytes came in " << seconds << " s";
  EXPECT_FALSE(body_->cancelled);
  close(fd);
}

TEST(ParseHttpRequest, WholeRequestsParseAndBrokenOnesNameTheProblem) {
  HttpServerOptions options;
  options.max_body_bytes = 16;
  auto r = parse_http_request(
      "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k\r\n"
      "Content-Length: 2\r\n\r\n{}",
      options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->method, "POST");
  EXPECT_EQ(r->path(), "/v1/completions");
  EXPECT_EQ(r->header("authorization"), "Bearer k");
  EXPECT_EQ(r->body, "{}");
  for (const char* bad : {"", "GET / HTTP/1.1\r\nHost: a\r\n",  // incomplete
                          "GET / HTTP/1.1\r\nContent-Length: 99\r\n\r\n{}",
                          // a body shorter than its length, after a full header (hung once)
                          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n{\"a\": 1}",
                          "POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n12345678901234567",
                          "GET\x01 / HTTP/1.1\r\n\r\n"}) {
    auto parsed = parse_http_request(bad, options);
    EXPECT_FALSE(parsed.ok()) << "input of " << std::string(bad).size() << " bytes";
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace sieve::server
