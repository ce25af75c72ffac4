#pragma once
// The sweep: every task's prompts run through the engine once with the full cache (the
// reference), then once per (method, keep or budget, protocol), all prompts of a setting
// submitted together so that the continuous batcher runs them as one batch.

#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"
#include "eval/prompt.h"
#include "eval/request.h"
#include "eval/results.h"

namespace sieve::eval {

struct SweepConfig {
  std::vector<std::string> tasks;
  std::vector<std::string> methods;  // "none" is always run (the reference)
  std::vector<double> keeps;         // keep ratios; or
  std::vector<int> budgets;          // token budgets (when set, keeps is ignored)
  std::vector<Protocol> protocols;
  std::vector<int> lengths;  // prompt lengths in tokens
  int samples = 4;           // per task and length, needle depths spread over (0, 1)
  uint64_t seed = 0;
  int max_tokens = 0;              // 0: each task's own
  double informative_floor = 0.2;  // full-cache score under which a task's rows are flagged
};

// Every prompt of the sweep, task by task, length by length; sample i's depth is (i + 0.5) / n.
StatusOr<std::vector<TaskPrompt>> make_prompts(const SweepConfig& config,
                                               const models::ChatTemplate& chat_template,
                                               const models::Tokenizer& tokenizer);

// The number of settings run_sweep reports progress over.
int count_settings(const SweepConfig& config);

// Called after each setting: (settings done, settings total, what ran).
using Progress = std::function<void(int done, int total, const std::string& label)>;

// Runs the sweep on `engine` (which no one else drives meanwhile) and returns the records in
// table order: per task, the full cache, then each method's settings. With `samples`, each run
// sample's output is appended there too (task, setting, length, depth, text, score).
StatusOr<std::vector<Record>> run_sweep(engine::Engine& engine, const SweepConfig& config,
                                        const std::vector<TaskPrompt>& prompts,
                                        const Progress& progress,
                                        std::vector<nlohmann::json>* samples = nullptr);

}  // namespace sieve::eval
