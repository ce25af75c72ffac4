#pragma once
// Stop strings over a stream of decoded text: the text a client receives never contains a stop
// string (unless asked to include it), is never cut inside one, and never shows a partial stop
// string that later turns out not to be one — a suffix that could start a stop string is held
// back until the next token settles it.

#include <string>
#include <string_view>
#include <vector>

namespace sieve::engine {

class StopStringFilter {
 public:
  StopStringFilter(std::vector<std::string> stops, bool include_stop_in_output);

  // Adds newly decoded text; returns the text that is safe to emit now.
  std::string push(std::string_view text);
  // True once a stop string appeared; push() then emits nothing more.
  bool matched() const { return matched_; }
  // At the end of generation (no stop string): the held-back rest.
  std::string flush();

 private:
  std::vector<std::string> stops_;
  bool include_;
  size_t max_stop_size_ = 0;
  std::string text_;    // the decoded text's tail: what a stop string may still end in
  size_t emitted_ = 0;  // bytes of text_ already returned
  bool matched_ = false;
};

}  // namespace sieve::engine
