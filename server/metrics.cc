#include "server/metrics.h"

#include <cmath>

#include "fmt/format.h"

namespace sieve::server {

void Counter::add(double value, const std::string& label_value) {
  std::lock_guard<std::mutex> lock(mutex_);
  values_[label_value] += value;
}

double Counter::value(const std::string& label_value) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = values_.find(label_value);
  return it == values_.end() ? 0.0 : it->second;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::observe(double value) {
  if (!std::isfinite(value)) return;
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micro_.fetch_add(static_cast<uint64_t>(std::max(0.0, value) * 1e6 + 0.5),
                       std::memory_order_relaxed);
}

double Histogram::sum() const { return sum_micro_.load() / 1e6; }

struct MetricsRegistry::Family {
  std::string name, help, type, label;
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Histogram> histogram;
  std::function<double()> read;
};

MetricsRegistry::MetricsRegistry(std::string constant_labels)
    : constant_labels_(std::move(constant_labels)) {}

MetricsRegistry::~MetricsRegistry() = default;

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help,
                                  const std::string& label) {
  auto family = std::make_unique<Family>();
  family->name = name;
  family->help = help;
  family->type = "counter";
  family->label = label;
  family->counter = std::make_unique<Counter>();
  Counter& counter = *family->counter;
  families_.push_back(std::move(family));
  return counter;
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                      std::vector<double> bounds) {
  auto family = std::make_unique<Family>();
  family->name = name;
  family->help = help;
  family->type = "histogram";
  family->histogram = std::make_unique<Histogram>(std::move(bounds));
  Histogram& histogram = *family->histogram;
  families_.push_back(std::move(family));
  return histogram;
}

void MetricsRegistry::callback(const std::string& name, const std::string& help,
                               const std::string& type, std::function<double()> read) {
  auto family = std::make_unique<Family>();
  family->name = name;
  family->help = help;
  family->type = type;
  family->read = std::move(read);
  families_.push_back(std::move(family));
}

namespace {

// Numbers as Prometheus reads them: +Inf spelled out, finite values in their shortest form.
std::string number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  return fmt::format("{}", value);  // the shortest text that reads back as the same double
}

std::string labels(const std::string& constant, const std::string& extra) {
  if (constant.empty() && extra.empty()) return "";
  if (constant.empty()) return "{" + extra + "}";
  if (extra.empty()) return "{" + constant + "}";
  return "{" + constant + "," + extra + "}";
}

}  // namespace

std::string escape_label_value(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MetricsRegistry::render() const {
  std::string out;
  for (const auto& f : families_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", f->name, f->help, f->name, f->type);
    if (f->read) {
      out += fmt::format("{}{} {}\n", f->name, labels(constant_labels_, ""), number(f->read()));
    } else if (f->counter) {
      std::lock_guard<std::mutex> lock(f->counter->mutex_);
      if (f->label.empty()) {
        const auto it = f->counter->values_.find("");
        const double value = it == f->counter->values_.end() ? 0.0 : it->second;
        out += fmt::format("{}{} {}\n", f->name, labels(constant_labels_, ""), number(value));
      }
      for (const auto& [label_value, value] : f->counter->values_) {
        if (f->label.empty()) continue;
        const std::string extra = f->label + "=\"" + escape_label_value(label_value) + "\"";
        out += fmt::format("{}{} {}\n", f->name, labels(constant_labels_, extra), number(value));
      }
    } else if (f->histogram) {
      const Histogram& h = *f->histogram;
      // _count is the +Inf bucket, so one scrape stays consistent under concurrent updates.
      uint64_t cumulative = 0;
      for (size_t b = 0; b <= h.bounds_.size(); ++b) {
        cumulative += h.buckets_[b].load(std::memory_order_relaxed);
        const std::string le =
            "le=\"" + (b < h.bounds_.size() ? number(h.bounds_[b]) : std::string("+Inf")) + "\"";
        out += fmt::format("{}_bucket{} {}\n", f->name, labels(constant_labels_, le), cumulative);
      }
      out += fmt::format("{}_sum{} {}\n", f->name, labels(constant_labels_, ""), number(h.sum()));
      out += fmt::format("{}_count{} {}\n", f->name, labels(constant_labels_, ""), cumulative);
    }
  }
  return out;
}

}  // namespace sieve::server
