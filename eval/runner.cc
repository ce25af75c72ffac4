#include "eval/runner.h"

#include <chrono>
#include <fstream>
#include <map>
#include <memory>

#include "eval/fidelity.h"
#include "fmt/format.h"

namespace sieve::eval {
namespace {

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

StatusOr<std::vector<Record>> run_sweep(const RunSetting& run, const SweepConfig& c,
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
    // One line per sample: what a reader checks, and everything replay_runner reads back.
    auto log_samples = [&](const MethodSetting& s, const SettingRun& setting_run) {
      if (samples == nullptr) return;
      for (size_t i = 0; i < mine.size(); ++i) {
        const TaskSample& t = mine[i]->sample;
        const RunOutput& o = setting_run.outputs[i];
        nlohmann::json top = nlohmann::json::array();
        for (const engine::TokenLogprob& lp : o.generation.logprobs) {
          nlohmann::json position = nlohmann::json::array();
          for (const auto& [id, logprob] : lp.top) position.push_back({id, logprob});
          top.push_back(std::move(position));
        }
        samples->push_back({{"task", task},
                            {"method", s.method},
                            {"keep", s.keep ? nlohmann::json(*s.keep) : nlohmann::json()},
                            {"budget", s.budget ? nlohmann::json(*s.budget) : nlohmann::json()},
                            {"protocol", protocol_name(s.protocol)},
                            {"length", t.length},
                            {"depth", t.depth},
                            {"index", t.index},
                            {"expected", t.expected},
                            {"score", t.scoring == Scoring::kFidelity ? 0.0 : score(t, o.text)},
                            {"text", o.text},
                            {"tokens", o.generation.tokens},
                            {"top_logprobs", std::move(top)},
                            {"prompt_tokens", o.usage.prompt_tokens},
                            {"kv_tokens_kept", o.usage.kv_tokens_kept},
                            {"kv_bytes", o.usage.kv_bytes},
                            {"setting_wall_s", setting_run.wall_s}});
      }
    };
    // The full cache: the reference of every other setting, and the `none` rows.
    const MethodSetting full{"none", 1.0, std::nullopt, Protocol::kAware};
    ASSIGN_OR_RETURN(SettingRun full_run, run(full, mine, c.max_tokens));
    const std::vector<RunOutput>& reference = full_run.outputs;
    log_samples(full, full_run);
    progress(++done, total, label_of(task, full));
    Record full_record = aggregate(mine, reference, reference);
    full_record.task = task;
    full_record.method = "none";
    full_record.keep = 1.0;
    full_record.wall_s = full_run.wall_s;
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
        StatusOr<SettingRun> outputs = run(s, mine, c.max_tokens);
        if (outputs.ok()) {
          r = aggregate(mine, outputs->outputs, reference);
          log_samples(s, *outputs);
          r.wall_s = outputs->wall_s;
        } else if (outputs.status().code() == absl::StatusCode::kUnimplemented) {
          r.status = "unsupported";
          r.reason = std::string(outputs.status().message());
          r.scoring = scoring_name(mine.front()->sample.scoring);
        } else {
          r.status = "error";
          r.reason = std::string(outputs.status().message());
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

RunSetting engine_runner(engine::Engine& engine) {
  return [&engine](const MethodSetting& setting, const std::vector<const TaskPrompt*>& prompts,
                   int max_tokens) -> StatusOr<SettingRun> {
    std::vector<engine::Request> requests;
    for (const TaskPrompt* p : prompts) {
      ASSIGN_OR_RETURN(
          engine::Request r,
          make_request(*p, setting, max_tokens > 0 ? max_tokens : p->sample.max_tokens));
      requests.push_back(std::move(r));
    }
    const auto start = std::chrono::steady_clock::now();
    SettingRun run;
    ASSIGN_OR_RETURN(run.outputs, run_batch(engine, std::move(requests)));
    run.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return run;
  };
}

namespace {

// The key of one recorded generation: the setting and the sample.
std::string replay_key(const std::string& task, const MethodSetting& s, int length, int index) {
  const std::string amount =
      s.budget ? fmt::format("b{}", *s.budget) : fmt::format("k{:.4f}", s.keep.value_or(1.0));
  return fmt::format("{}|{}|{}|{}|{}|{}", task, s.method, amount, protocol_name(s.protocol), length,
                     index);
}

StatusOr<std::pair<std::string, std::pair<RunOutput, double>>> parse_replay_line(
    const nlohmann::json& j) {
  MethodSetting s;
  s.method = j.at("method").get<std::string>();
  if (j.contains("budget") && !j["budget"].is_null()) s.budget = j["budget"].get<int>();
  if (j.contains("keep") && !j["keep"].is_null()) s.keep = j["keep"].get<double>();
  ASSIGN_OR_RETURN(s.protocol, parse_protocol(j.value("protocol", std::string("aware"))));
  RunOutput out;
  out.text = j.at("text").get<std::string>();
  out.generation.tokens = j.at("tokens").get<std::vector<int32_t>>();
  if (j.contains("top_logprobs")) {
    for (const nlohmann::json& position : j["top_logprobs"]) {
      engine::TokenLogprob lp;
      for (const nlohmann::json& pair : position) {
        lp.top.emplace_back(pair.at(0).get<int32_t>(), pair.at(1).get<float>());
      }
      if (!lp.top.empty()) {
        lp.token_id = lp.top.front().first;
        lp.logprob = lp.top.front().second;
      }
      out.generation.logprobs.push_back(std::move(lp));
    }
  }
  out.usage.prompt_tokens = j.value("prompt_tokens", 0);
  out.usage.completion_tokens = static_cast<int>(out.generation.tokens.size());
  out.usage.kv_tokens_kept = j.value("kv_tokens_kept", 0);
  out.usage.kv_bytes = j.value("kv_bytes", int64_t{0});
  return std::make_pair(replay_key(j.at("task").get<std::string>(), s, j.at("length").get<int>(),
                                   j.at("index").get<int>()),
                        std::make_pair(std::move(out), j.value("setting_wall_s", 0.0)));
}

}  // namespace

StatusOr<RunSetting> replay_runner(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError(path + ": cannot read");
  auto recorded = std::make_shared<std::map<std::string, std::pair<RunOutput, double>>>();
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    // nlohmann's parser is iterative over nesting depth; a malformed line is an error naming it.
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    StatusOr<std::pair<std::string, std::pair<RunOutput, double>>> entry =
        InvalidArgumentError("not a JSON object");
    if (j.is_object()) {
      try {
        entry = parse_replay_line(j);
      } catch (const nlohmann::json::exception& e) {
        entry = InvalidArgumentError(e.what());
      }
    }
    if (!entry.ok()) {
      return InvalidArgumentError(
          fmt::format("{}:{}: {}", path, number, std::string(entry.status().message())));
    }
    (*recorded)[entry->first] = std::move(entry->second);
  }
  return RunSetting([recorded, path](const MethodSetting& setting,
                                     const std::vector<const TaskPrompt*>& prompts,
                                     int) -> StatusOr<SettingRun> {
    SettingRun run;
    for (const TaskPrompt* p : prompts) {
      const std::string key =
          replay_key(p->sample.task, setting, p->sample.length, p->sample.index);
      const auto it = recorded->find(key);
      if (it == recorded->end()) return UnimplementedError(path + " has no generation for " + key);
      run.outputs.push_back(it->second.first);
      run.wall_s = it->second.second;
    }
    return run;
  });
}

}  // namespace sieve::eval
