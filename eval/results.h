#pragma once
// The harness's results: one Record per task x method x keep (or budget) x protocol, written to
// and read from results.json (the shape bench/kvpress/ writes too), and printed as tables.

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "nlohmann/json.hpp"

namespace sieve::eval {

inline constexpr const char* kResultsSchema = "sieve.eval/1";

struct Record {
  std::string task, method, protocol;
  std::optional<double> keep;          // the keep ratio asked; 1 for the full cache
  std::optional<int> budget;           // or the token budget asked
  std::string status = "ok";           // ok | unsupported | error
  std::string reason;                  // why unsupported or failed
  std::string scoring;                 // the task's rule (tasks.h Scoring)
  std::optional<double> score;         // mean over the samples, in [0, 1]
  int n = 0;                           // samples scored
  std::optional<double> leakage_rate;  // secret task: share of outputs holding the secret
  double mean_prompt_tokens = 0, mean_completion_tokens = 0;
  double mean_kv_tokens_kept = 0;  // usage.kv_tokens_kept at the request's end
  double mean_kv_bytes = 0;        // usage.kv_bytes at the request's end
  double wall_s = 0;               // the setting's requests, submitted together, start to end
  // Fidelity against the full-cache run of the same prompts (tasks' means over samples).
  std::optional<double> greedy_agreement, mean_kl, first_divergence_mean, diverged_share;
  std::map<int, std::pair<double, int>> by_length;  // length -> (score, n)
  std::string note;                                 // e.g. "full cache below 0.2: not informative"
};

nlohmann::json to_json(const Record& r);
Record record_from_json(const nlohmann::json& j);

// Writes {"schema", "meta": meta, "records": [...]} to `path`.
Status write_results(const std::string& path, const nlohmann::json& meta,
                     const std::vector<Record>& records);
// Reads DIR/results.json (or the file `path` names); records of any engine, fields it lacks
// left empty.
StatusOr<std::vector<Record>> read_results(const std::string& path);

// The table a person reads: supported rows in full, the unsupported ones of a task in one line.
void print_table(std::FILE* out, const std::vector<Record>& records);
// Both tables joined on (task, method, keep/budget, protocol), side by side.
void print_comparison(std::FILE* out, const std::vector<Record>& ours, const std::string& our_name,
                      const std::vector<Record>& theirs, const std::string& their_name);

}  // namespace sieve::eval
