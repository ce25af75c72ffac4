#include "eval/results.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "fmt/format.h"
#include "fmt/ranges.h"

namespace sieve::eval {
namespace {

using nlohmann::json;

template <typename T>
json opt(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

template <typename T>
std::optional<T> opt_from(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  return j[key].get<T>();
}

std::string fmt_opt(const std::optional<double>& v, const char* spec = "{:.3f}") {
  return v ? fmt::format(fmt::runtime(spec), *v) : "-";
}

std::string setting_label(const Record& r) {
  if (r.budget) return fmt::format("b{}", *r.budget);
  return r.keep ? fmt::format("{:.2f}", *r.keep) : "-";
}

// Join key of a record across engines.
std::string key_of(const Record& r) {
  return r.task + "|" + r.method + "|" + setting_label(r) + "|" + r.protocol;
}

}  // namespace

json to_json(const Record& r) {
  json by_length = json::object();
  for (const auto& [length, sn] : r.by_length) {
    by_length[std::to_string(length)] = {{"score", sn.first}, {"n", sn.second}};
  }
  return {{"task", r.task},
          {"method", r.method},
          {"keep", opt(r.keep)},
          {"budget", opt(r.budget)},
          {"protocol", r.protocol},
          {"status", r.status},
          {"reason", r.reason},
          {"scoring", r.scoring},
          {"score", opt(r.score)},
          {"n", r.n},
          {"leakage_rate", opt(r.leakage_rate)},
          {"mean_prompt_tokens", r.mean_prompt_tokens},
          {"mean_completion_tokens", r.mean_completion_tokens},
          {"mean_kv_tokens_kept", r.mean_kv_tokens_kept},
          {"mean_kv_bytes", r.mean_kv_bytes},
          {"wall_s", r.wall_s},
          {"greedy_agreement", opt(r.greedy_agreement)},
          {"first_divergence_mean", opt(r.first_divergence_mean)},
          {"diverged_share", opt(r.diverged_share)},
          {"mean_kl", opt(r.mean_kl)},
          {"by_length", by_length},
          {"note", r.note}};
}

Record record_from_json(const json& j) {
  Record r;
  r.task = j.value("task", "");
  r.method = j.value("method", "");
  r.protocol = j.value("protocol", "aware");
  r.keep = opt_from<double>(j, "keep");
  r.budget = opt_from<int>(j, "budget");
  r.status = j.value("status", "ok");
  r.reason = j.value("reason", "");
  r.scoring = j.value("scoring", "");
  r.score = opt_from<double>(j, "score");
  r.n = j.value("n", 0);
  r.leakage_rate = opt_from<double>(j, "leakage_rate");
  r.mean_prompt_tokens = j.value("mean_prompt_tokens", 0.0);
  r.mean_completion_tokens = j.value("mean_completion_tokens", 0.0);
  r.mean_kv_tokens_kept = j.value("mean_kv_tokens_kept", 0.0);
  r.mean_kv_bytes = j.value("mean_kv_bytes", 0.0);
  r.wall_s = j.value("wall_s", 0.0);
  r.greedy_agreement = opt_from<double>(j, "greedy_agreement");
  r.first_divergence_mean = opt_from<double>(j, "first_divergence_mean");
  r.diverged_share = opt_from<double>(j, "diverged_share");
  r.mean_kl = opt_from<double>(j, "mean_kl");
  if (j.contains("by_length") && j["by_length"].is_object()) {
    for (const auto& [length, sn] : j["by_length"].items()) {
      r.by_length[std::stoi(length)] = {sn.value("score", 0.0), sn.value("n", 0)};
    }
  }
  r.note = j.value("note", "");
  return r;
}

Status write_results(const std::string& path, const json& meta,
                     const std::vector<Record>& records) {
  json out = {{"schema", kResultsSchema}, {"meta", meta}, {"records", json::array()}};
  for (const Record& r : records) out["records"].push_back(to_json(r));
  std::ofstream file(path);
  if (!file) return NotFoundError(path + ": cannot write");
  file << out.dump(2) << "\n";
  return file ? OkStatus() : InternalError(path + ": write failed");
}

StatusOr<std::vector<Record>> read_results(const std::string& path) {
  std::string file = path;
  if (std::filesystem::is_directory(file))
    file = (std::filesystem::path(path) / "results.json").string();
  std::ifstream in(file);
  if (!in) return NotFoundError(file + ": cannot open");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("records") || !j["records"].is_array()) {
    return InvalidArgumentError(file + ": not a results.json (an object with \"records\")");
  }
  std::vector<Record> records;
  for (const json& r : j["records"]) records.push_back(record_from_json(r));
  return records;
}

void print_table(std::FILE* out, const std::vector<Record>& records) {
  std::fprintf(out, "%-15s %-18s %5s %-8s %6s %4s %7s %8s %7s %6s %6s %7s  %s\n", "task", "method",
               "keep", "protocol", "score", "n", "kept", "KV MiB", "wall s", "agree", "div@", "KL",
               "note");
  std::string task;
  std::vector<const Record*> unsupported;
  auto flush_unsupported = [&] {
    if (unsupported.empty()) return;
    std::set<std::string> methods, protocols, reasons;
    for (const Record* r : unsupported) {
      methods.insert(r->method);
      protocols.insert(r->protocol);
      reasons.insert(r->reason);
    }
    const std::string m = fmt::format("{}", fmt::join(methods, ","));
    const std::string p = fmt::format("{}", fmt::join(protocols, ","));
    const std::string why = fmt::format("{}", fmt::join(reasons, "; "));
    std::fprintf(out, "%-15s unsupported: %zu rows (%s; %s): %s\n", task.c_str(),
                 unsupported.size(), m.c_str(), p.c_str(), why.c_str());
    unsupported.clear();
  };
  for (const Record& r : records) {
    if (r.task != task) {
      flush_unsupported();
      task = r.task;
    }
    if (r.status == "unsupported") {
      unsupported.push_back(&r);
      continue;
    }
    const std::string note = r.status == "ok" ? r.note : r.status + ": " + r.reason;
    std::fprintf(out, "%-15s %-18s %5s %-8s %6s %4d %7.0f %8.2f %7.1f %6s %6s %7s  %s\n",
                 r.task.c_str(), r.method.c_str(), setting_label(r).c_str(), r.protocol.c_str(),
                 fmt_opt(r.score).c_str(), r.n, r.mean_kv_tokens_kept, r.mean_kv_bytes / (1 << 20),
                 r.wall_s, fmt_opt(r.greedy_agreement).c_str(),
                 fmt_opt(r.first_divergence_mean, "{:.1f}").c_str(),
                 fmt_opt(r.mean_kl, "{:.4f}").c_str(), note.c_str());
  }
  flush_unsupported();
}

void print_comparison(std::FILE* out, const std::vector<Record>& ours, const std::string& our_name,
                      const std::vector<Record>& theirs, const std::string& their_name) {
  std::map<std::string, const Record*> theirs_by_key;
  for (const Record& r : theirs) theirs_by_key[key_of(r)] = &r;
  std::set<std::string> matched;
  std::fprintf(out, "%-15s %-18s %5s %-8s | %-12s %6s %4s %6s | %-12s %6s %4s %6s | %6s\n", "task",
               "method", "keep", "protocol", our_name.c_str(), "score", "n", "agree",
               their_name.c_str(), "score", "n", "agree", "delta");
  auto side = [](const Record* r) {
    if (r == nullptr) return fmt::format("{:<12} {:>6} {:>4} {:>6}", "(no row)", "", "", "");
    const std::string status = r->status == "ok" ? "" : r->status;
    return fmt::format("{:<12} {:>6} {:>4} {:>6}", status, fmt_opt(r->score), r->n,
                       fmt_opt(r->greedy_agreement));
  };
  auto row = [&](const Record& key, const Record* a, const Record* b) {
    const std::string delta =
        a && b && a->score && b->score ? fmt::format("{:+.3f}", *a->score - *b->score) : "-";
    std::fprintf(out, "%-15s %-18s %5s %-8s | %s | %s | %6s\n", key.task.c_str(),
                 key.method.c_str(), setting_label(key).c_str(), key.protocol.c_str(),
                 side(a).c_str(), side(b).c_str(), delta.c_str());
  };
  for (const Record& r : ours) {
    const auto it = theirs_by_key.find(key_of(r));
    const Record* other = it == theirs_by_key.end() ? nullptr : it->second;
    if (r.status == "unsupported" && (other == nullptr || other->status != "ok")) continue;
    if (other) matched.insert(key_of(r));
    row(r, &r, other);
  }
  for (const Record& r : theirs) {
    if (!matched.count(key_of(r)) && r.status == "ok") row(r, nullptr, &r);
  }
}

}  // namespace sieve::eval
