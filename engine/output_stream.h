#pragma once
// A request's stream of outputs: the engine thread pushes, one consumer (a server handler, the
// CLI, a benchmark) pops. Thread-safe.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>

#include "engine/request.h"

namespace sieve::engine {

class OutputStream {
 public:
  explicit OutputStream(RequestId id) : id_(id) {}
  RequestId id() const { return id_; }

  void push(RequestOutput output);
  // The next chunk, waiting up to `timeout`; empty on timeout or once the stream is finished
  // and drained.
  std::optional<RequestOutput> next(std::chrono::milliseconds timeout);
  // True once the final chunk has been pushed and popped.
  bool done() const;
  // Calls `on_push` (on the pushing thread, outside the lock) after every push, and once now if
  // chunks are already queued: lets an asynchronous consumer wait without a thread.
  void set_listener(std::function<void()> on_push);

 private:
  const RequestId id_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<RequestOutput> queue_;
  bool closed_ = false;  // the final chunk was pushed
  std::function<void()> listener_;
};

}  // namespace sieve::engine
