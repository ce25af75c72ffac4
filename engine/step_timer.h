#pragma once
// Where a step's time goes: cumulative seconds per phase, for the benchmarks' step split.

#include <array>
#include <chrono>
#include <string_view>

namespace sieve::engine {

enum class StepPhase { kSchedule, kModel, kSample, kDetokenize, kCompress, kCount };

class StepTimer {
 public:
  // Adds the time since the last mark() (or reset) to `phase`.
  void mark(StepPhase phase) {
    const auto now = std::chrono::steady_clock::now();
    seconds_[static_cast<int>(phase)] += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }
  void restart() { last_ = std::chrono::steady_clock::now(); }
  double seconds(StepPhase phase) const { return seconds_[static_cast<int>(phase)]; }
  static std::string_view name(StepPhase phase) {
    constexpr std::array<std::string_view, 5> kNames = {"schedule", "model", "sample",
                                                        "detokenize", "compress"};
    return kNames[static_cast<int>(phase)];
  }

 private:
  std::array<double, static_cast<int>(StepPhase::kCount)> seconds_{};
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace sieve::engine
