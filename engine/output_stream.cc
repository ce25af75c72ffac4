#include "engine/output_stream.h"

namespace sieve::engine {

void OutputStream::push(RequestOutput output) {
  std::function<void()> listener;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (output.finished_request) closed_ = true;
    queue_.push_back(std::move(output));
    listener = listener_;
  }
  ready_.notify_all();
  if (listener) listener();
}

void OutputStream::set_listener(std::function<void()> on_push) {
  bool pending = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    listener_ = on_push;
    pending = !queue_.empty();
  }
  if (pending && on_push) on_push();
}

std::optional<RequestOutput> OutputStream::next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  // A zero timeout polls: no wait, which would cost a futex call even with nothing to wait for.
  if (timeout.count() > 0) {
    ready_.wait_for(lock, timeout, [&] { return !queue_.empty() || closed_; });
  }
  if (queue_.empty()) return std::nullopt;
  RequestOutput out = std::move(queue_.front());
  queue_.pop_front();
  return out;
}

bool OutputStream::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return closed_ && queue_.empty();
}

}  // namespace sieve::engine
