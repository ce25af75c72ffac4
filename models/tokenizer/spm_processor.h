#pragma once
// libsentencepiece behind a header free of Abseil: Debian's sentencepiece_processor.h declares
// its own absl::string_view, which clashes with Abseil's, so only spm_processor.cc includes it
// and that file includes nothing from Abseil (or from core/status.h).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sieve::models {

class SpmProcessor {
 public:
  // Loads a serialized sentencepiece ModelProto; on failure returns nullptr and sets `error`.
  static std::unique_ptr<SpmProcessor> load(std::string_view serialized_model, std::string* error);
  ~SpmProcessor();
  SpmProcessor(const SpmProcessor&) = delete;
  SpmProcessor& operator=(const SpmProcessor&) = delete;

  // Appends the ids of `text` (normalized, dummy prefix and all, as the model specifies).
  void encode(std::string_view text, std::vector<int32_t>* ids) const;

 private:
  struct Impl;
  explicit SpmProcessor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sieve::models
