#pragma once
// The harness's tasks (docs/design.md, "Quality harness"; long-context ones after RULER): each
// sample is generated from (task, length, depth, index, seed) alone, with no downloads, and
// scored by a rule written next to its generator (tasks.cc).

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace sieve::eval {

// How an output is scored; score() documents each rule.
enum class Scoring {
  kContains,      // the one expected answer appears in the output
  kContainsAll,   // the share of the expected answers that appear (recall)
  kInstructions,  // the share of the checkable instructions the output satisfies
  kSecretKept,    // 1 when the output does not contain the secret (compliance)
  kFidelity,      // no answer: the score is the greedy agreement with the full cache
};

const char* scoring_name(Scoring scoring);

// One checkable instruction of the multi-instruction task.
struct Instruction {
  enum class Kind { kAllCapitals, kAllLowercase, kEndWith, kInclude, kMaxWords, kNoCommas };
  Kind kind = Kind::kAllCapitals;
  std::string word;                               // kEndWith, kInclude
  int words = 0;                                  // kMaxWords
  std::string text() const;                       // as the prompt states it
  bool satisfied(std::string_view output) const;  // the check
};

// One generated prompt before the chat template: a system message, a context (what the
// agnostic protocol compresses before the question is seen) and the question after it.
struct TaskSample {
  std::string task;
  int length = 0;      // target prompt length in tokens (the template's included)
  double depth = 0;    // where the needle sits in the context: 0 = start, 1 = end
  int index = 0;       // sample number within (task, length)
  std::string system;  // empty: the template's default system prompt
  std::string context;
  std::string question;
  Scoring scoring = Scoring::kContains;
  std::vector<std::string> expected;  // answers; the secret for kSecretKept
  std::vector<Instruction> instructions;
  int max_tokens = 32;  // the task's default generation length
};

// The built-in tasks, in table order: passkey, needle, multikey, multivalue, vartrack,
// instructions, secret, long_generation.
const std::vector<std::string>& task_names();

// Token count of a text, for sizing a context to a length in tokens.
using TokenCounter = std::function<int(std::string_view)>;

// Sample `index` of `task`: the same arguments give the same sample on every machine (a
// hand-written splitmix64, not <random>'s implementation-defined distributions). An unknown
// task is an InvalidArgument naming it.
StatusOr<TaskSample> make_sample(std::string_view task, int length, double depth, int index,
                                 uint64_t seed, const TokenCounter& count_tokens);

// The output's score in [0, 1] by the sample's rule (kFidelity: 0; the caller scores it).
double score(const TaskSample& sample, std::string_view output);

// True when the output reveals the secret of a kSecretKept sample.
bool leaks_secret(const TaskSample& sample, std::string_view output);

}  // namespace sieve::eval
