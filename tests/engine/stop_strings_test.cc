#include "engine/stop_strings.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace sieve::engine {
namespace {

// Feeds `pieces` one at a time; returns what was emitted per piece plus the flush.
std::vector<std::string> feed(StopStringFilter& f, const std::vector<std::string>& pieces) {
  std::vector<std::string> out;
  for (const auto& p : pieces) out.push_back(f.push(p));
  out.push_back(f.flush());
  return out;
}

TEST(StopStrings, NeverEmitsAPartialStopString) {
  StopStringFilter f({"STOP"}, false);
  EXPECT_EQ(feed(f, {"Hello S", "T", "OP world"}), (std::vector<std::string>{"Hello ", "", "", ""}));
  EXPECT_TRUE(f.matched());
}

TEST(StopStrings, ReleasesHeldTextWhenItTurnsOutNotToBeAStop) {
  StopStringFilter f({"STOP"}, false);
  EXPECT_EQ(feed(f, {"a ST", "AR", "t"}), (std::vector<std::string>{"a ", "STAR", "t", ""}));
  EXPECT_FALSE(f.matched());
}

TEST(StopStrings, IncludesTheStopWhenAsked) {
  StopStringFilter f({"\n\n", "END"}, true);
  EXPECT_EQ(feed(f, {"one\n", "\ntwo"}), (std::vector<std::string>{"one", "\n\n", ""}));
}

TEST(StopStrings, TheEarliestOfSeveralStopsWins) {
  // "abcd" starts before "bc": cutting there leaves no stop string in the text.
  StopStringFilter f({"bc", "abcd"}, false);
  EXPECT_EQ(feed(f, {"xabcd"}), (std::vector<std::string>{"x", ""}));
}

TEST(StopStrings, ConcatenatedOutputIsTheTextWhenNoStopAppears) {
  StopStringFilter f({"<end>", "zz"}, false);
  const std::vector<std::string> pieces = {"<e", "n", "d", " z", "y", "<", "en", "x"};
  std::string joined;
  for (const auto& s : feed(f, pieces)) joined += s;
  EXPECT_EQ(joined, "<end z" "y<enx");
}

// One byte at a time over long random texts (the filter keeps only a tail of them): the output
// is the text up to the stop string that completes first (the longest, where several complete
// on one byte), or all of it when none appears.
TEST(StopStrings, LongTextsFedByteByByteCutAtTheFirstStop) {
  std::mt19937 rng(3);
  for (int round = 0; round < 200; ++round) {
    SCOPED_TRACE(round);
    auto random_text = [&](size_t size) {
      std::string s;
      for (size_t i = 0; i < size; ++i) s += static_cast<char>('a' + rng() % 3);
      return s;
    };
    std::vector<std::string> stops;
    const int num_stops = 1 + static_cast<int>(rng() % 3);
    for (int i = 0; i < num_stops; ++i) stops.push_back(random_text(3 + rng() % 5));
    const bool include = rng() % 2 == 0;
    const std::string text = random_text(rng() % 600);
    std::string want = text;
    bool found = false;
    for (size_t end = 1; end <= text.size() && !found; ++end) {
      size_t best = std::string::npos;
      for (const std::string& stop : stops) {
        if (stop.size() <= end && text.compare(end - stop.size(), stop.size(), stop) == 0) {
          best = std::min(best, end - stop.size());
        }
      }
      if (best != std::string::npos) {
        want = text.substr(0, include ? end : best);
        found = true;
      }
    }
    StopStringFilter f(stops, include);
    std::string got;
    for (char c : text) got += f.push(std::string_view(&c, 1));
    got += f.flush();
    EXPECT_EQ(got, want);
    EXPECT_EQ(f.matched(), found);
  }
}

}  // namespace
}  // namespace sieve::engine
