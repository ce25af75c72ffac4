#pragma once
// The sweep: every task's prompts run through the engine once with the full cache (the
// reference), then once per (method, keep or budget, protocol), all prompts of a setting
// submitted together so that the continuous batcher runs them as one batch.

#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"
#include "eval/fidelity.h"
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

// One prompt's greedy generation under a setting.
struct RunOutput {
  Generation generation;
  std::string text;
  engine::Usage usage;
};

// One setting run over one task's prompts: an output per prompt, in order, and the setting's
// wall time (its requests run together).
struct SettingRun {
  std::vector<RunOutput> outputs;
  double wall_s = 0;
};

// Runs one setting on one task's prompts (each with `max_tokens` new tokens, or its task's own
// when 0). UNIMPLEMENTED: the setting cannot run there (its row says why); other errors end
// the sweep.
using RunSetting = std::function<StatusOr<SettingRun>(
    const MethodSetting& setting, const std::vector<const TaskPrompt*>& prompts, int max_tokens)>;

// The engine's RunSetting: submits the setting's requests together and steps `engine` (which no
// one else drives meanwhile) until all finish.
RunSetting engine_runner(engine::Engine& engine);

// A RunSetting that replays recorded generations: run_sweep's own `samples` lines
// (samples.jsonl) or another engine's in the same shape (bench/kvpress writes them). JSON lines of {task, method, keep or budget, protocol, length, index, tokens, text,
// top_logprobs: [[[id, logprob], ...] per token], prompt_tokens, kv_tokens_kept, kv_bytes,
// setting_wall_s}. A setting the file lacks for some prompt is UNIMPLEMENTED.
StatusOr<RunSetting> replay_runner(const std::string& path);

// Runs the sweep and returns the records in table order: per task, the full cache, then each
// method's settings. With `samples`, each run sample's output is appended there too (task,
// setting, length, depth, text, score, and the fields replay_runner reads).
StatusOr<std::vector<Record>> run_sweep(const RunSetting& run, const SweepConfig& config,
                                        const std::vector<TaskPrompt>& prompts,
                                        const Progress& progress,
                                        std::vector<nlohmann::json>* samples = nullptr);
inline StatusOr<std::vector<Record>> run_sweep(engine::Engine& engine, const SweepConfig& config,
                                               const std::vector<TaskPrompt>& prompts,
                                               const Progress& progress,
                                               std::vector<nlohmann::json>* samples = nullptr) {
  return run_sweep(engine_runner(engine), config, prompts, progress, samples);
}

}  // namespace sieve::eval
