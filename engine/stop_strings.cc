#include "engine/stop_strings.h"

#include <algorithm>

namespace sieve::engine {

StopStringFilter::StopStringFilter(std::vector<std::string> stops, bool include_stop_in_output)
    : stops_(std::move(stops)), include_(include_stop_in_output) {
  for (const std::string& stop : stops_) max_stop_size_ = std::max(max_stop_size_, stop.size());
}

std::string StopStringFilter::push(std::string_view text) {
  if (matched_) return {};
  if (stops_.empty()) return std::string(text);
  // Text before the last max_stop_size_ - 1 bytes can no longer start a match: only the
  // unemitted rest and that tail are kept, so a push costs the stops, not the whole output.
  const size_t keep = std::min(emitted_, text_.size() - std::min(text_.size(), max_stop_size_));
  if (keep > 0) {
    text_.erase(0, keep);
    emitted_ -= keep;
  }
  const size_t old_size = text_.size();
  text_ += text;
  // The earliest stop string that ends in the new text.
  size_t best = std::string::npos, best_len = 0;
  for (const std::string& stop : stops_) {
    const size_t from = old_size >= stop.size() ? old_size - stop.size() + 1 : 0;
    const size_t at = text_.find(stop, from);
    if (at != std::string::npos && at < best) {
      best = at;
      best_len = stop.size();
    }
  }
  if (best != std::string::npos) {
    matched_ = true;
    const size_t end = std::max(emitted_, include_ ? best + best_len : best);
    std::string out = text_.substr(emitted_, end - emitted_);
    emitted_ = end;
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t k = std::min(stop.size() - 1, text_.size() - emitted_); k > hold; --k) {
      if (text_.compare(text_.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  const size_t end = text_.size() - hold;
  std::string out = text_.substr(emitted_, end - emitted_);
  emitted_ = end;
  return out;
}

std::string StopStringFilter::flush() {
  if (matched_) return {};
  std::string out = text_.substr(emitted_);
  emitted_ = text_.size();
  return out;
}

}  // namespace sieve::engine
