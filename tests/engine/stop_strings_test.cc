#include "engine/stop_strings.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace sieve::engine
