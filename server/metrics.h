#pragma once
// Prometheus metrics in the text exposition format (version 0.0.4), written here by hand:
// prometheus-cpp, which the issue names, is not packaged in Debian 12, and the format is a few
// lines per metric family. Counters, gauges and fixed-bucket histograms, each with an optional
// set of label values; every update is lock-free or takes one short lock, from any thread.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace sieve::server {

// A monotonically increasing count, optionally split by one label's value.
class Counter {
 public:
  void add(double value, const std::string& label_value = "");
  double value(const std::string& label_value = "") const;

 private:
  friend class MetricsRegistry;
  mutable std::mutex mutex_;
  std::map<std::string, double> values_;  // label value -> count
};

// A distribution over fixed upper bounds (seconds, tokens): cumulative buckets, sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  uint64_t count() const { return count_.load(); }
  double sum() const;

 private:
  friend class MetricsRegistry;
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // per bound (not cumulative), then +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micro_{0};  // sum in millionths, so updates stay lock-free
};

// The families of one process, rendered in registration order. Each sample carries the
// registry's constant labels (model_name), as vLLM's do.
class MetricsRegistry {
 public:
  explicit MetricsRegistry(std::string constant_labels);  // e.g. model_name="x"
  ~MetricsRegistry();

  // `label` names the one label a counter is split by ("" = none).
  Counter& counter(const std::string& name, const std::string& help, const std::string& label = "");
  Histogram& histogram(const std::string& name, const std::string& help,
                       std::vector<double> bounds);
  // A gauge or counter read at scrape time (engine atomics).
  void callback(const std::string& name, const std::string& help, const std::string& type,
                std::function<double()> read);

  std::string render() const;

 private:
  struct Family;
  std::string constant_labels_;
  std::vector<std::unique_ptr<Family>> families_;
};

// Escapes a label value for the text format (backslash, quote, newline).
std::string escape_label_value(const std::string& value);

}  // namespace sieve::server
