// The `sieve` command as a user runs it: golden greedy output through `generate --json`, and
// clear errors (non-zero exit, a message naming the problem) for impossible arguments and broken
// model files.

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
  std::string last_line;
};

CommandResult run(const std::string& args) {
  const std::string command = std::string(SIEVE_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  CommandResult r{-1, "", ""};
  if (pipe == nullptr) return r;
  std::array<char, 4096> buffer;
  while (fgets(buffer.data(), buffer.size(), pipe)) r.output += buffer.data();
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  size_t end = r.output.find_last_not_of('\n');
  if (end != std::string::npos) {
    size_t begin = r.output.rfind('\n', end);
    r.last_line = r.output.substr(begin == std::string::npos ? 0 : begin + 1, end - begin);
  }
  return r;
}

const fs::path kGolden = fs::path(SIEVE_SOURCE_DIR) / "tests/fixtures/golden";

TEST(Generate, JsonGreedyOutputMatchesTheGoldenContinuation) {
  std::ifstream in(kGolden / "qwen2/golden.json");
  const auto golden = nlohmann::json::parse(in);
  const auto& c = golden["cases"][1];
  std::string ids;
  for (int id : c["prompt_ids"]) {
    if (!ids.empty()) ids += ',';
    ids += std::to_string(id);
  }
  CommandResult r = run("--log-level warn generate --model " + (kGolden / "qwen2").string() +
              " --prompt-token-ids " + ids + " --max-tokens 12 --ignore-eos --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto out = nlohmann::json::parse(r.last_line);
  EXPECT_EQ(out["token_ids"], c["greedy_ids"]);
  EXPECT_EQ(out["finish_reason"], "length");
  EXPECT_TRUE(out.contains("text"));
}

TEST(Generate, SeededSamplingIsReproducible) {
  const std::string args = "--log-level off generate --model " + (kGolden / "llama2").string() +
                           " --prompt-token-ids 5,6,7 --max-tokens 10 --temperature 1.0 "
                           "--top-p 0.9 --top-k 50 --min-p 0.01 --ignore-eos --json --seed ";
  CommandResult a = run(args + "7"), b = run(args + "7");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(nlohmann::json::parse(a.last_line)["token_ids"],
            nlohmann::json::parse(b.last_line)["token_ids"]);
}

void expect_error(const std::string& args, const std::string& message) {
  CommandResult r = run("generate --model " + (kGolden / "llama2").string() + " " + args);
  EXPECT_NE(r.exit_code, 0) << args;
  EXPECT_NE(r.output.find(message), std::string::npos) << args << "\n" << r.output;
  EXPECT_EQ(r.output.find("check failed"), std::string::npos) << r.output;
}

TEST(Generate, ImpossibleArgumentsAreClearErrors) {
  expect_error("--prompt-token-ids 1,2 --max-tokens 0", "max_tokens must be at least 1");
  expect_error("--prompt-token-ids 1,256", "token id 256 at position 1 is outside the vocabulary");
  expect_error("--prompt-token-ids 1,-3", "token id -3");
  expect_error("--prompt-token-ids 1,x", "'x' is not a token id");
  expect_error("--prompt-token-ids 1 --temperature -1", "temperature must be");
  expect_error("--prompt-token-ids 1 --top-p 0", "top_p must be in (0, 1]");
  expect_error("--prompt-token-ids 1 --top-p 1.5", "top_p must be in (0, 1]");
  expect_error("--prompt-token-ids 1 --top-k -2", "top_k must be");
  expect_error("--prompt-token-ids 1 --min-p 2", "min_p must be in [0, 1]");
  std::string long_prompt = "1";
  for (int i = 0; i < 600; ++i) long_prompt += ",1";
  expect_error("--prompt-token-ids " + long_prompt, "does not fit the model's context of 512");
  expect_error("--prompt-token-ids 1 --max-tokens 600", "exceed the model's context");
  expect_error("", "give --prompt or --prompt-token-ids");
}

TEST(Generate, BrokenModelsAreClearErrors) {
  const fs::path dir = fs::temp_directory_path() / ("sieve_cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(kGolden / "llama2/config.json", dir / "config.json");
  {
    std::ifstream src(kGolden / "llama2/model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(src)), {});
    std::ofstream(dir / "model.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  CommandResult r = run("generate --model " + dir.string() + " --prompt-token-ids 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("model.safetensors"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("lie outside"), std::string::npos) << r.output;

  std::ofstream(dir / "config.json") << "{\"architectures\": [\"LlamaForCausalLM\"], ";
  r = run("generate --model " + dir.string() + " --prompt-token-ids 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("config.json: malformed JSON"), std::string::npos) << r.output;
  fs::remove_all(dir);

  r = run("generate --model /nonexistent/model --prompt-token-ids 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("/nonexistent/model: no such file or directory"), std::string::npos)
      << r.output;
}

TEST(Cli, RejectsAnUnknownLogLevel) {
  CommandResult r = run("--log-level loud generate --prompt-token-ids 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown level 'loud'"), std::string::npos) << r.output;
}

}  // namespace

namespace {

TEST(DefaultModel, AnswersTheCapitalOfFrance) {
  CommandResult r = run("--log-level warn generate --model default --chat --prompt "
                        "\"What is the capital of France?\" --max-tokens 24 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto out = nlohmann::json::parse(r.last_line);
  EXPECT_NE(out["text"].get<std::string>().find("Paris"), std::string::npos) << out.dump();
  EXPECT_EQ(out["finish_reason"], "stop");  // the chat template's end of turn ends it
}

TEST(DefaultModel, TokenizePrintsTheIdsAsJson) {
  CommandResult r = run("tokenize --model default --text \"Hello world\" --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.last_line)["token_ids"], nlohmann::json({19556, 905}));
  r = run("tokenize --model default");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("give --text or --file"), std::string::npos) << r.output;
}

}  // namespace

namespace {

// CI machines have no GPU: asking for CUDA is a clear error, and auto falls back to the CPU.
TEST(Device, CudaWithoutAGpuIsAClearErrorAndAutoFallsBack) {
  const std::string model = (kGolden / "llama2").string();
  CommandResult r = run("generate --device cuda --model " + model + " --prompt-token-ids 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--device cuda:"), std::string::npos) << r.output;
  r = run("--log-level info generate --device auto --model " + model +
          " --prompt-token-ids 1 --max-tokens 2 --json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("on cpu"), std::string::npos) << r.output;
}

}  // namespace
