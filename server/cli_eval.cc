#include "server/cli_eval.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "eval/runner.h"
#include "models/tokenizer/chat_template.h"
#include "nlohmann/json.hpp"
#include "server/cli_common.h"
#include "spdlog/spdlog.h"

namespace sieve::server {
namespace {

namespace fs = std::filesystem;

struct EvalOptions {
  ModelOptions model;
  std::vector<std::string> tasks = {"all"};
  std::vector<std::string> methods = {"all"};
  std::vector<double> keeps = {0.5, 0.25, 0.1};
  std::vector<int> budgets;
  std::string protocol = "both";
  std::vector<int> lengths = {512};
  int samples = 4;
  uint64_t seed = 0;
  int max_tokens = 0;
  std::string out = "eval_results";
  std::string dump_prompts;
  std::string replay;
  std::string compare;
  bool reuse = false;
  bool plot = true;
};

StatusOr<eval::SweepConfig> sweep_config(const EvalOptions& o) {
  eval::SweepConfig c;
  c.tasks = o.tasks.size() == 1 && o.tasks[0] == "all" ? eval::task_names() : o.tasks;
  c.methods = o.methods.size() == 1 && o.methods[0] == "all" ? eval::policy_names() : o.methods;
  for (const std::string& m : c.methods) {
    const auto& known = eval::policy_names();
    if (std::find(known.begin(), known.end(), m) == known.end()) {
      return InvalidArgumentError("--methods: unknown method '" + m + "'");
    }
  }
  for (double k : o.keeps) {
    if (!(k > 0 && k <= 1)) return InvalidArgumentError("--keep: ratios must be in (0, 1]");
  }
  for (int b : o.budgets) {
    if (b < 1) return InvalidArgumentError("--budget: budgets must be at least 1 token");
  }
  if (o.samples < 1) return InvalidArgumentError("--samples must be at least 1");
  c.keeps = o.keeps;
  c.budgets = o.budgets;
  if (o.protocol != "agnostic") c.protocols.push_back(eval::Protocol::kAware);
  if (o.protocol != "aware") c.protocols.push_back(eval::Protocol::kAgnostic);
  c.lengths = o.lengths;
  c.samples = o.samples;
  c.seed = o.seed;
  c.max_tokens = o.max_tokens;
  return c;
}

void progress_bar(int done, int total, double elapsed_s, const std::string& label) {
  const int width = 30;
  const int filled = total ? width * done / total : width;
  std::fprintf(stderr, "\r\033[K[%.*s%*s] %d/%d settings, %.0f s  %s", filled,
               "##############################", width - filled, "", done, total, elapsed_s,
               label.c_str());
  std::fflush(stderr);
}

nlohmann::json prompt_json(const eval::TaskPrompt& p, uint64_t seed) {
  const eval::TaskSample& s = p.sample;
  nlohmann::json instructions = nlohmann::json::array();
  for (const eval::Instruction& i : s.instructions) {
    static const char* kKinds[] = {"all_capitals", "all_lowercase", "end_with",
                                   "include",      "max_words",     "no_commas"};
    instructions.push_back({{"kind", kKinds[static_cast<int>(i.kind)]},
                            {"text", i.text()},
                            {"word", i.word},
                            {"words", i.words}});
  }
  return {{"task", s.task},
          {"length", s.length},
          {"depth", s.depth},
          {"index", s.index},
          {"seed", seed},
          {"system", s.system},
          {"context", s.context},
          {"question", s.question},
          {"text", p.text},
          {"token_ids", p.token_ids},
          {"context_tokens", p.context_tokens},
          {"expected", s.expected},
          {"scoring", eval::scoring_name(s.scoring)},
          {"instructions", instructions},
          {"max_tokens", s.max_tokens}};
}

fs::path executable_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

// The plots come from matplotlib (bench/eval/plot.py): it is already in the project's Python
// environment, and a hand-written PNG writer with axes, legends and text would be a library's
// worth of code for one chart. The binary sits in build/, the script and .venv at the root.
void plot(const std::string& out_dir, const std::string& compare) {
  const fs::path root = executable_dir().parent_path();
  fs::path script = root / "bench/eval/plot.py";
  if (!fs::exists(script)) script = fs::path(SIEVE_SOURCE_DIR) / "bench/eval/plot.py";
  std::string python;
  if (const char* env = std::getenv("SIEVE_PYTHON")) python = env;
  for (const fs::path& p :
       {root / ".venv/bin/python", fs::path(SIEVE_SOURCE_DIR) / ".venv/bin/python"}) {
    if (python.empty() && fs::exists(p)) python = p.string();
  }
  std::string command = "'" + script.string() + "' '" + out_dir + "'";
  if (!compare.empty()) command += " --compare '" + compare + "'";
  if (python.empty() || !fs::exists(script)) {
    std::fprintf(stderr, "plots: no project Python found; run: python3 %s\n", command.c_str());
    return;
  }
  command = "'" + python + "' " + command;
  if (std::system(command.c_str()) != 0) {
    std::fprintf(stderr, "plots failed; run: %s\n", command.c_str());
  }
}

// An engine whose KV cache holds one task's requests at once.
StatusOr<std::unique_ptr<engine::Engine>> make_sweep_engine(
    const LoadedRunner& runner, const models::Tokenizer* tokenizer, const ModelOptions& options,
    const eval::SweepConfig& config, const std::vector<eval::TaskPrompt>& prompts) {
  int64_t most_tokens = 0;
  std::map<std::string, int64_t> per_task;
  for (const eval::TaskPrompt& p : prompts) {
    const int max_tokens = config.max_tokens > 0 ? config.max_tokens : p.sample.max_tokens;
    most_tokens = std::max(most_tokens, per_task[p.sample.task] +=
                                        static_cast<int64_t>(p.token_ids.size()) + max_tokens);
  }
  return make_engine(runner, tokenizer, options, most_tokens);
}

Status run_eval(const EvalOptions& o) {
  ASSIGN_OR_RETURN(eval::SweepConfig config, sweep_config(o));
  std::vector<eval::Record> records;
  if (o.reuse) {
    ASSIGN_OR_RETURN(records, eval::read_results(o.out));
  } else {
    ModelOptions model_options = o.model;
    std::unique_ptr<models::Tokenizer> tokenizer;
    LoadedRunner runner;
    if (o.dump_prompts.empty() && o.replay.empty()) {
      ASSIGN_OR_RETURN(runner, load_runner(model_options));
      ASSIGN_OR_RETURN(tokenizer, models::load_model_tokenizer(runner.files));
    } else {  // the prompts (and a replay's scoring) need only the tokenizer
      ASSIGN_OR_RETURN(runner.files,
                       models::load_model_files(o.model.model, models::LoadFormat::kAuto));
      ASSIGN_OR_RETURN(tokenizer, models::load_model_tokenizer(runner.files));
    }
    if (!tokenizer) return InvalidArgumentError(o.model.model + ": the model has no tokenizer");
    const models::ChatTemplate chat_template =
        models::chat_template_for(*tokenizer, architecture_hint(runner.files.config));
    ASSIGN_OR_RETURN(std::vector<eval::TaskPrompt> prompts,
                     eval::make_prompts(config, chat_template, *tokenizer));
    if (!o.dump_prompts.empty()) {
      std::ofstream out(o.dump_prompts);
      if (!out) return NotFoundError(o.dump_prompts + ": cannot write");
      for (const eval::TaskPrompt& p : prompts) {
        out << prompt_json(p, o.seed).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
            << "\n";
      }
      std::fprintf(stderr, "wrote %zu prompts to %s\n", prompts.size(), o.dump_prompts.c_str());
      return OkStatus();
    }
    eval::RunSetting run_setting;
    std::unique_ptr<engine::Engine> engine;
    if (!o.replay.empty()) {
      ASSIGN_OR_RETURN(run_setting, eval::replay_runner(o.replay));
    } else {
      ASSIGN_OR_RETURN(engine,
                       make_sweep_engine(runner, tokenizer.get(), model_options, config, prompts));
      run_setting = eval::engine_runner(*engine);
    }
    const bool show_progress = isatty(STDERR_FILENO);
    const auto start = std::chrono::steady_clock::now();
    auto progress = [&](int done, int total, const std::string& label) {
      if (show_progress) {
        progress_bar(
            done, total,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), label);
      }
    };
    std::vector<nlohmann::json> samples;
    ASSIGN_OR_RETURN(records, eval::run_sweep(run_setting, config, prompts, progress, &samples));
    if (show_progress) std::fprintf(stderr, "\n");
    std::error_code ec;
    fs::create_directories(o.out, ec);
    if (ec) return NotFoundError(o.out + ": cannot create (" + ec.message() + ")");
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    std::vector<std::string> protocols;
    for (eval::Protocol p : config.protocols) protocols.push_back(eval::protocol_name(p));
    const nlohmann::json meta = {
        {"engine", o.replay.empty() ? "sieve" : "replay"},
        {"replay", o.replay},
        {"model", runner.files.source},
        {"device", runner.backend ? runner.backend->name() : std::string()},
        {"tasks", config.tasks},
        {"methods", config.methods},
        {"keeps", config.keeps},
        {"budgets", config.budgets},
        {"protocols", protocols},
        {"lengths", config.lengths},
        {"samples", config.samples},
        {"seed", config.seed},
        {"max_tokens", config.max_tokens},
        {"date", date},
        {"elapsed_s",
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}};
    RETURN_IF_ERROR(
        eval::write_results((fs::path(o.out) / "results.json").string(), meta, records));
    std::ofstream samples_out(fs::path(o.out) / "samples.jsonl");
    for (const nlohmann::json& s : samples) {
      samples_out << s.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
  }
  eval::print_table(stdout, records);
  if (!o.compare.empty()) {
    ASSIGN_OR_RETURN(std::vector<eval::Record> theirs, eval::read_results(o.compare));
    std::printf("\n");
    eval::print_comparison(stdout, records, "sieve", theirs, "compare");
  }
  std::fflush(stdout);
  if (o.plot) plot(o.out, o.compare);
  return OkStatus();
}

}  // namespace

void register_eval(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<EvalOptions>();
  EvalOptions& o = *options;
  // Every setting runs the same prompts: a prefix-cache hit would make later settings' wall
  // times (and a compressed run's prefill) differ from a cold run's.
  o.model.enable_prefix_caching = false;
  CLI::App* cmd = app.add_subcommand(
      "eval", "KV-compression quality: built-in tasks x methods x keep ratios x protocols");
  add_model_options(*cmd, o.model);
  std::string task_help = "Tasks, comma-separated, or all:";
  for (const std::string& t : eval::task_names()) task_help += " " + t;
  cmd->add_option("--tasks", o.tasks, task_help)->delimiter(',')->capture_default_str();
  std::string method_help = "Methods, comma-separated, or all:";
  for (const std::string& m : eval::policy_names()) method_help += " " + m;
  cmd->add_option("--methods", o.methods, method_help)->delimiter(',')->capture_default_str();
  auto* keep = cmd->add_option("--keep", o.keeps, "Keep ratios of the prompt, comma-separated")
                   ->delimiter(',')
                   ->capture_default_str();
  auto* budget = cmd->add_option("--budget", o.budgets,
                                 "Or token budgets (per layer and KV head), comma-separated")
                     ->delimiter(',');
  keep->excludes(budget);
  cmd->add_option("--protocol", o.protocol,
                  "aware (the whole prompt compressed), agnostic (the context compressed before "
                  "the question is seen) or both")
      ->check(CLI::IsMember({"aware", "agnostic", "both"}))
      ->capture_default_str();
  cmd->add_option("--lengths", o.lengths, "Prompt lengths in tokens, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--samples", o.samples, "Samples per task and length (needle depths spread)")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of the generated prompts")->capture_default_str();
  cmd->add_option("--max-tokens", o.max_tokens, "Tokens to generate; 0: each task's own")
      ->capture_default_str();
  cmd->add_option("--out", o.out, "Directory for results.json and the plots")
      ->capture_default_str();
  cmd->add_option("--dump-prompts", o.dump_prompts,
                  "Write the generated prompts as JSONL to this file and exit (no model run)");
  cmd->add_option("--replay", o.replay,
                  "Score generations another engine recorded for the same prompts (JSONL, as "
                  "bench/kvpress/run_eval.py writes) instead of running the model");
  cmd->add_option("--compare", o.compare,
                  "Another results.json (or its directory), e.g. bench/kvpress's: printed and "
                  "plotted side by side");
  cmd->add_flag("--reuse", o.reuse, "Read --out's results.json instead of running the model");
  cmd->add_flag("--plot,!--no-plot", o.plot, "Write a PNG per task (bench/eval/plot.py)")
      ->capture_default_str();
  cmd->callback([options, &exit_code] {
    const Status status = run_eval(*options);
    if (!status.ok()) exit_code = report_error(status);
  });
}

}  // namespace sieve::server
