#include "eval/runner.h"

#include <chrono>

#include "eval/fidelity.h"
#include "fmt/format.h"

namespace sieve::eval {
namespace {

struct RunOutput {
  Generation generation;
  std::string text;
  engine::Usage usage;
};

// Submits every request at once and steps the engine until all have finished.
StatusOr<std::vector<RunOutput>> run_batch(engine::Engine& engine,
                                           std::vector<engine::Request> requests) {
  std::vector<std::shared_ptr<engine::OutputStream>> streams;
  for (engine::Request& r : requests) {
    ASSIGN_OR_RETURN(auto stream, engine.add_request(std::move(r)));
    streams.push_back(std::move(stream));
  }
  std::vector<RunOutput> outputs(streams.size());
  size_t finished = 0;
  while (finished < streams.size()) {
    const bool worked = engine.step();
    for (size_t i = 0; i < streams.size(); ++i) {
      while (auto out = streams[i]->next(std::chrono::milliseconds(0))) {
        if (out->finish_reason == "error") return InternalError("engine: " + out->error);
        RunOutput& o = outputs[i];
        o.generation.tokens.insert(o.generation.tokens.end(), out->token_ids.begin(),
                                   out->token_ids.end());
        o.generation.logprobs.insert(o.generation.logprobs.end(), out->logprobs.begin(),
                                     out->logprobs.end());
        o.text += out->text;
        if (out->finished_request) {
          o.usage = out->usage;
          ++finished;
        }
      }
    }
    if (!worked && !engine.has_work() && finished < streams.size()) {
      return InternalError("engine went idle with unfinished requests");
    }
  }
  return outputs;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / v.size();
}

// The record of one setting from its outputs and the full-cache outputs of the same prompts.
Record aggregate(const std::vector<const TaskPrompt*>& prompts,
                 const std::vector<RunOutput>& outputs, const std::vector<RunOutput>& reference) {
  Record r;
  r.scoring = scoring_name(prompts.front()->sample.scoring);
  r.n = static_cast<int>(prompts.size());
  std::vector<double> scores, agreement, kl, divergence, prompt_tokens, completion, kept, bytes;
  int leaks = 0, diverged = 0;
  std::map<int, std::pair<double, int>> by_length;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const TaskSample& s = prompts[i]->sample;
    const Fidelity f = compare(reference[i].generation, outputs[i].generation);
    const double sc =
        s.scoring == Scoring::kFidelity ? f.greedy_agreement : score(s, outputs[i].text);
    scores.push_back(sc);
    by_length[s.length].first += sc;
    by_length[s.length].second += 1;
    leaks += s.scoring == Scoring::kSecretKept && leaks_secret(s, outputs[i].text) ? 1 : 0;
    agreement.push_back(f.greedy_agreement);
    kl.push_back(f.mean_kl);
    if (f.first_divergence) {
      ++diverged;
      divergence.push_back(*f.first_divergence);
    }
    prompt_tokens.push_back(outputs[i].usage.prompt_tokens);
    completion.push_back(outputs[i].usage.completion_tokens);
    kept.push_back(outputs[i].usage.kv_tokens_kept);
    bytes.push_back(static_cast<double>(outputs[i].usage.kv_bytes));
  }
  r.score = mean(scores);
  if (prompts.front()->sample.scoring == Scoring::kSecretKept) {
    r.leakage_rate = static_cast<double>(leaks) / r.n;
  }
  r.greedy_agreement = mean(agreement);
  r.mean_kl = mean(kl);
  r.diverged_share = static_cast<double>(diverged) / r.n;
  if (!divergence.empty()) r.first_divergence_mean = mean(divergence);
  r.mean_prompt_tokens = mean(prompt_tokens);
  r.mean_completion_tokens = mean(completion);
  r.mean_kv_tokens_kept = mean(kept);
  r.mean_kv_bytes = mean(bytes);
  for (auto& [length, sn] : by_length) sn.first /= sn.second;
  r.by_length = by_length;
  return r;
}

// The compression settings of one method: its keeps (or budgets) x protocols.
std::vector<MethodSetting> settings_of(const SweepConfig& c, const std::string& method) {
  std::vector<MethodSetting> out;
  if (method == "none") {
    for (Protocol p : c.protocols) out.push_back({method, 1.0, std::nullopt, p});
    return out;
  }
  for (Protocol p : c.protocols) {
    if (!c.budgets.empty()) {
      for (int b : c.budgets) out.push_back({method, std::nullopt, b, p});
    } else {
      for (double k : c.keeps) out.push_back({method, k, std::nullopt, p});
    }
  }
  return out;
}

std::string label_of(const std::string& task, const MethodSetting& s) {
  const std::string amount = s.budget ? fmt::format("budget {}", *s.budget)
                                      : fmt::format("keep {:.2f}", s.keep.value_or(1.0));
  return fmt::format("{} {} {} {}", task, s.method, amount, protocol_name(s.protocol));
}

}  // namespace

StatusOr<std::vector<TaskPrompt>> make_prompts(const SweepConfig& c,
                                               const models::ChatTemplate& chat_template,
                                               const models::Tokenizer& tokenizer) {
  const TokenCounter count = [&](std::string_view text) {
    return static_cast<int>(tokenizer.encode(text, /*add_special_tokens=*/false).size());
  };
  std::vector<TaskPrompt> prompts;
  for (const std::string& task : c.tasks) {
    for (int length : c.lengths) {
      for (int i = 0; i < c.samples; ++i) {
        const double depth = (i + 0.5) / c.samples;
        ASSIGN_OR_RETURN(TaskSample sample, make_sample(task, length, depth, i, c.seed, count));
        ASSIGN_OR_RETURN(TaskPrompt prompt,
                         render_prompt(std::move(sample), chat_template, tokenizer));
        prompts.push_back(std::move(prompt));
      }
    }
  }
  return prompts;
}

int count_settings(const SweepConfig& c) {
  int per_task = 0;
  for (const std::string& m : c.methods) {
    if (m != "none") per_task += static_cast<int>(settings_of(c, m).size());
  }
  return static_cast<int>(c.tasks.size()) * (per_task + 1);  // + the full-cache run
}

StatusOr<std::vector<Record>> run_sweep(engine::Engine& engine, const SweepConfig& c,
                                        const std::vector<TaskPrompt>& prompts,
                                        const Progress& progress,
                                        std::vector<nlohmann::json>* samples) {
  std::vector<Record> records;
  const int total = count_settings(c);
  int done = 0;
  for (const std::string& task : c.tasks) {
    std::vector<const TaskPrompt*> mine;
    for (const TaskPrompt& p : prompts) {
      if (p.sample.task == task) mine.push_back(&p);
    }
    if (mine.empty()) continue;
    auto requests_for = [&](const MethodSetting& s) -> StatusOr<std::vector<engine::Request>> {
      std::vector<engine::Request> requests;
      for (const TaskPrompt* p : mine) {
        const int max_tokens = c.max_tokens > 0 ? c.max_tokens : p->sample.max_tokens;
        ASSIGN_OR_RETURN(engine::Request r, make_request(*p, s, max_tokens));
        requests.push_back(std::move(r));
      }
      return requests;
    };
    auto log_samples = [&](const MethodSetting& s, const std::vector<RunOutput>& outputs) {
      if (samples == nullptr) return;
      for (size_t i = 0; i < mine.size(); ++i) {
        const TaskSample& t = mine[i]->sample;
        samples->push_back(
            {{"task", task},
             {"method", s.method},
             {"keep", s.keep ? nlohmann::json(*s.keep) : nlohmann::json()},
             {"budget", s.budget ? nlohmann::json(*s.budget) : nlohmann::json()},
             {"protocol", protocol_name(s.protocol)},
             {"length", t.length},
             {"depth", t.depth},
             {"index", t.index},
             {"expected", t.expected},
             {"score", t.scoring == Scoring::kFidelity ? 0.0 : score(t, outputs[i].text)},
             {"text", outputs[i].text}});
      }
    };
    auto timed_run = [&](std::vector<engine::Request> requests, double& wall_s) {
      const auto start = std::chrono::steady_clock::now();
      auto outputs = run_batch(engine, std::move(requests));
      wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return outputs;
    };

    // The full cache: the reference of every other setting, and the `none` rows.
    const MethodSetting full{"none", 1.0, std::nullopt, Protocol::kAware};
    ASSIGN_OR_RETURN(std::vector<engine::Request> full_requests, requests_for(full));
    double full_wall_s = 0;
    ASSIGN_OR_RETURN(std::vector<RunOutput> reference,
                     timed_run(std::move(full_requests), full_wall_s));
    log_samples(full, reference);
    progress(++done, total, label_of(task, full));
    Record full_record = aggregate(mine, reference, reference);
    full_record.task = task;
    full_record.method = "none";
    full_record.keep = 1.0;
    full_record.wall_s = full_wall_s;
    std::string task_note;
    if (mine.front()->sample.scoring == Scoring::kFidelity) {
      task_note = "fidelity only: score = greedy agreement with the full cache";
    } else if (full_record.score.value_or(0) < c.informative_floor) {
      task_note = fmt::format("full cache below {:.1f}: not informative", c.informative_floor);
    }
    const size_t first_of_task = records.size();
    for (Protocol p : c.protocols) {
      Record r = full_record;
      r.protocol = protocol_name(p);
      if (p == Protocol::kAgnostic) r.note = "same run as aware: nothing is compressed";
      records.push_back(r);
    }

    for (const std::string& method : c.methods) {
      if (method == "none") continue;
      for (const MethodSetting& s : settings_of(c, method)) {
        Record r;
        StatusOr<std::vector<engine::Request>> requests = requests_for(s);
        if (requests.ok()) {
          double wall_s = 0;
          StatusOr<std::vector<RunOutput>> outputs = timed_run(std::move(*requests), wall_s);
          if (outputs.ok()) {
            r = aggregate(mine, *outputs, reference);
            log_samples(s, *outputs);
            r.wall_s = wall_s;
          } else {
            r.status = "error";
            r.reason = std::string(outputs.status().message());
          }
        } else if (requests.status().code() == absl::StatusCode::kUnimplemented) {
          r.status = "unsupported";
          r.reason = std::string(requests.status().message());
          r.scoring = scoring_name(mine.front()->sample.scoring);
        } else {
          return requests.status();
        }
        r.task = task;
        r.method = s.method;
        r.keep = s.keep;
        r.budget = s.budget;
        r.protocol = protocol_name(s.protocol);
        records.push_back(std::move(r));
        progress(++done, total, label_of(task, s));
      }
    }
    if (!task_note.empty()) {
      for (size_t i = first_of_task; i < records.size(); ++i) {
        Record& r = records[i];
        r.note = r.note.empty() ? task_note : task_note + "; " + r.note;
      }
    }
  }
  return records;
}

}  // namespace sieve::eval
