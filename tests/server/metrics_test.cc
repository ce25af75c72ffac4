// The Prometheus text exposition: families with HELP/TYPE, labelled counters, cumulative
// histogram buckets whose +Inf bucket equals the count, scrape-time callbacks.

#include "server/metrics.h"

#include <gtest/gtest.h>

#include <thread>

namespace sieve::server {
namespace {

bool contains(const std::string& text, const std::string& line) {
  return text.find(line) != std::string::npos;
}

TEST(Metrics, RendersCountersWithLabelsAndConstantLabels) {
  MetricsRegistry registry("model_name=\"m\"");
  Counter& plain = registry.counter("sieve:x_total", "X.");
  Counter& by_reason = registry.counter("sieve:r_total", "R.", "finished_reason");
  plain.add(2);
  by_reason.add(1, "stop");
  by_reason.add(3, "length");
  by_reason.add(1, "stop");
  const std::string text = registry.render();
  EXPECT_TRUE(contains(text, "# HELP sieve:x_total X.\n# TYPE sieve:x_total counter\n"));
  EXPECT_TRUE(contains(text, "sieve:x_total{model_name=\"m\"} 2\n"));
  EXPECT_TRUE(contains(text, "sieve:r_total{model_name=\"m\",finished_reason=\"stop\"} 2\n"));
  EXPECT_TRUE(contains(text, "sieve:r_total{model_name=\"m\",finished_reason=\"length\"} 3\n"));
  EXPECT_DOUBLE_EQ(by_reason.value("stop"), 2);
}

TEST(Metrics, HistogramBucketsAreCumulativeAndInfEqualsCount) {
  MetricsRegistry registry("");
  Histogram& h = registry.histogram("sieve:t_seconds", "T.", {0.1, 1.0});
  for (double v : {0.05, 0.1, 0.5, 2.0, 3.0}) h.observe(v);
  const std::string text = registry.render();
  EXPECT_TRUE(contains(text, "# TYPE sieve:t_seconds histogram\n"));
  EXPECT_TRUE(contains(text, "sieve:t_seconds_bucket{le=\"0.1\"} 2\n"));  // le is inclusive
  EXPECT_TRUE(contains(text, "sieve:t_seconds_bucket{le=\"1\"} 3\n"));
  EXPECT_TRUE(contains(text, "sieve:t_seconds_bucket{le=\"+Inf\"} 5\n"));
  EXPECT_TRUE(contains(text, "sieve:t_seconds_count 5\n"));
  EXPECT_TRUE(contains(text, "sieve:t_seconds_sum 5.65\n"));
  EXPECT_EQ(h.count(), 5u);
}

TEST(Metrics, CallbacksAreReadAtScrapeTime) {
  MetricsRegistry registry("");
  int value = 1;
  registry.callback("sieve:g", "G.", "gauge", [&] { return value; });
  EXPECT_TRUE(contains(registry.render(), "sieve:g 1\n"));
  value = 7;
  EXPECT_TRUE(contains(registry.render(), "sieve:g 7\n"));
}

TEST(Metrics, ConcurrentObservationsAreAllCounted) {
  MetricsRegistry registry("");
  Histogram& h = registry.histogram("h", "H.", {1.0});
  Counter& c = registry.counter("c_total", "C.", "k");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        h.observe(0.5);
        c.add(1, "a");
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h.count(), 4000u);
  EXPECT_DOUBLE_EQ(c.value("a"), 4000);
}

TEST(Metrics, LabelValuesAreEscaped) {
  EXPECT_EQ(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

}  // namespace
}  // namespace sieve::server
