// `sieve eval` as CI runs it: a tiny setting on the default model (two tasks, three samples, 256
// tokens). The full cache must score what it scored when tests/fixtures/eval/full_cache.json was
// made, and every method of the list must produce its rows (supported or marked unsupported).

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::pair<int, std::string> run_sieve(const std::string& args) {
  const std::string command = std::string(SIEVE_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  std::string output;
  std::array<char, 4096> buffer;
  while (fgets(buffer.data(), buffer.size(), pipe)) output += buffer.data();
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  return json::parse(in);
}

json fixture() {
  return read_json(fs::path(SIEVE_SOURCE_DIR) / "tests/fixtures/eval/full_cache.json");
}

// The full cache's rows match the fixture's scores.
void expect_full_cache_as_recorded(const json& results, const json& fix) {
  for (const auto& [task, expected] : fix["full_cache_scores"].items()) {
    int found = 0;
    for (const json& r : results["records"]) {
      if (r["task"] != task || r["method"] != "none") continue;
      ++found;
      EXPECT_EQ(r["status"], "ok");
      EXPECT_NEAR(r["score"].get<double>(), expected.get<double>(), 1e-9) << task;
      EXPECT_EQ(r["n"], fix["samples_per_task"]) << task;
      // The full cache against itself.
      EXPECT_EQ(r["greedy_agreement"], 1.0);
      EXPECT_EQ(r["mean_kl"], 0.0);
      EXPECT_GT(r["mean_kv_tokens_kept"].get<double>(), r["mean_prompt_tokens"].get<double>() - 1);
      EXPECT_GT(r["mean_kv_bytes"].get<double>(), 0);
    }
    EXPECT_EQ(found, 2) << task << ": one full-cache row per protocol";
  }
}

// One row per task x method x keep x protocol (the full cache: keep 1), each ok or unsupported.
void expect_every_row(const json& results, const json& fix) {
  const json& meta = results["meta"];
  EXPECT_EQ(meta["methods"], fix["methods"]);
  const size_t keeps = meta["keeps"].size(), protocols = meta["protocols"].size();
  std::set<std::string> rows;
  for (const json& r : results["records"]) {
    const std::string status = r["status"];
    EXPECT_TRUE(status == "ok" || status == "unsupported") << r.dump();
    if (status == "unsupported") {
      EXPECT_TRUE(r["score"].is_null()) << r.dump();
      EXPECT_FALSE(r["reason"].get<std::string>().empty()) << r.dump();
    } else {
      EXPECT_GE(r["score"].get<double>(), 0.0);
      EXPECT_LE(r["score"].get<double>(), 1.0);
      EXPECT_FALSE(r["greedy_agreement"].is_null());
    }
    rows.insert(r["task"].get<std::string>() + "|" + r["method"].get<std::string>() + "|" +
                r["keep"].dump() + "|" + r["protocol"].get<std::string>());
  }
  const size_t tasks = meta["tasks"].size(), methods = meta["methods"].size();
  EXPECT_EQ(rows.size(), tasks * protocols * (1 + (methods - 1) * keeps));
  EXPECT_EQ(results["records"].size(), rows.size());
  for (const json& task : meta["tasks"]) {
    for (const json& method : meta["methods"]) {
      for (const json& protocol : meta["protocols"]) {
        const json keep_values = method == "none" ? json::array({1.0}) : meta["keeps"];
        for (const json& keep : keep_values) {
          EXPECT_TRUE(rows.count(task.get<std::string>() + "|" + method.get<std::string>() + "|" +
                                 keep.dump() + "|" + protocol.get<std::string>()))
              << task << " " << method << " " << keep << " " << protocol;
        }
      }
    }
  }
}

// One sweep (the slow part, ~30 s on 2 cores) and every check on its results.
TEST(EvalCi, TinySweepOnTheDefaultModel) {
  const json fix = fixture();
  const fs::path out =
      fs::temp_directory_path() / ("sieve_eval_test_" + std::to_string(::getpid()));
  auto [code, output] = run_sieve("--log-level warn eval --model default --no-plot --out " +
                                  out.string() + " " + fix["args"].get<std::string>());
  ASSERT_EQ(code, 0) << output;
  const json results = read_json(out / "results.json");
  expect_full_cache_as_recorded(results, fix);
  expect_every_row(results, fix);
  EXPECT_NE(output.find("passkey"), std::string::npos) << output;
  // --compare against itself: every joined row's delta is zero.
  auto [compare_code, compare_output] = run_sieve("--log-level warn eval --reuse --no-plot --out " +
                                                  out.string() + " --compare " + out.string());
  EXPECT_EQ(compare_code, 0) << compare_output;
  EXPECT_NE(compare_output.find("+0.000"), std::string::npos) << compare_output;
  // Replaying the run's own samples.jsonl (the shape bench/kvpress writes) scores every row as
  // the run did: scores, fidelity, kept tokens.
  const fs::path replayed = out.string() + "_replay";
  auto [replay_code, replay_output] =
      run_sieve("--log-level warn eval --model default --no-plot --replay " +
                (out / "samples.jsonl").string() + " --out " + replayed.string() + " " +
                fix["args"].get<std::string>());
  ASSERT_EQ(replay_code, 0) << replay_output;
  const json again = read_json(replayed / "results.json");
  ASSERT_EQ(again["records"].size(), results["records"].size());
  for (size_t i = 0; i < results["records"].size(); ++i) {
    json a = results["records"][i], b = again["records"][i];
    // An unsupported setting has no generations: the replay says so in its own words.
    for (json* r : {&a, &b}) {
      r->erase("wall_s");
      r->erase("reason");
    }
    EXPECT_EQ(a, b) << i;
  }
  EXPECT_EQ(again["meta"]["engine"], "replay");
  fs::remove_all(out);
  fs::remove_all(replayed);
}

TEST(EvalCi, ReplayNamesAMalformedLine) {
  const json fix = fixture();
  const fs::path file =
      fs::temp_directory_path() / ("sieve_eval_replay_" + std::to_string(::getpid()) + ".jsonl");
  std::ofstream(file) << "{\"task\": \"passkey\"}\n";
  auto [code, output] =
      run_sieve("--log-level warn eval --model default --no-plot --replay " + file.string() +
                " --out " + file.string() + "_out " + fix["args"].get<std::string>());
  EXPECT_NE(code, 0);
  EXPECT_NE(output.find(file.string() + ":1:"), std::string::npos) << output;
  fs::remove(file);
}

TEST(EvalCi, DumpPromptsWritesEveryPromptAsJsonl) {
  const json fix = fixture();
  const fs::path file =
      fs::temp_directory_path() / ("sieve_eval_prompts_" + std::to_string(::getpid()) + ".jsonl");
  auto [code, output] = run_sieve("--log-level warn eval --model default --dump-prompts " +
                                  file.string() + " " + fix["args"].get<std::string>());
  ASSERT_EQ(code, 0) << output;
  std::ifstream in(file);
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const json p = json::parse(line);
    EXPECT_FALSE(p["token_ids"].empty());
    EXPECT_GT(p["context_tokens"].get<int>(), 0);
    EXPECT_LT(p["context_tokens"].get<size_t>(), p["token_ids"].size());
    for (const char* key : {"task", "text", "expected", "scoring", "question", "context"}) {
      EXPECT_TRUE(p.contains(key)) << key;
    }
  }
  EXPECT_EQ(lines, fix["full_cache_scores"].size() * fix["samples_per_task"].get<int>());
  fs::remove(file);
}

}  // namespace
