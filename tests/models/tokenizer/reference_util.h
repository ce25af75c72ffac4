#pragma once
// The Python-built references of the tokenizer tests: make_references.py runs once (per content
// of the script, the corpus and the GGUF's presence) into a cache directory under the system temp
// directory, which every test process then reads.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "models/tokenizer/tokenizer.h"
#include "models/tokenizer/unicode.h"

namespace sieve::models::testing {

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

inline std::string fixture_path(const std::string& name) {
  return std::string(SIEVE_SOURCE_DIR) + "/tests/models/tokenizer/" + name;
}

inline std::string default_gguf_path() {
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/sieve/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// Runs `command`, returning its exit status and appending its output to `output`.
inline int run_command(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output->append(buffer, n);
  return pclose(pipe);
}

// The directory the references are in, built on first use; empty after reporting a failure.
inline const std::filesystem::path& references_dir() {
  namespace fs = std::filesystem;
  static const fs::path built = []() -> fs::path {
    const std::string script = fixture_path("make_references.py");
    const std::string gguf = default_gguf_path();
    const bool have_gguf = fs::exists(gguf);
    std::string inputs = read_text(script) + read_text(fixture_path("fixtures/corpus.json")) +
                         read_text(fixture_path("fixtures/conversations.json")) +
                         (have_gguf ? gguf : "");
    for (const auto& entry : fs::directory_iterator(fixture_path("fixtures/chat_templates"))) {
      inputs += entry.path().filename().string() + read_text(entry.path());
    }
    const size_t key = std::hash<std::string>()(inputs);
    const fs::path dir =
        fs::temp_directory_path() / fmt::format("sieve_tokenizer_refs_{:016x}", key);
    if (!fs::exists(dir / "index.json")) {
      const fs::path staging = dir.string() + fmt::format(".tmp{}", static_cast<long>(getpid()));
      fs::remove_all(staging);
      std::string output;
      const int status = run_command(fmt::format("'{}' '{}' '{}' '{}'", SIEVE_PYTHON, script,
                                                 staging.string(), have_gguf ? gguf : ""),
                                     &output);
      if (status != 0) {
        ADD_FAILURE() << "make_references.py failed (" << status << "):\n" << output;
        return fs::path();
      }
      std::error_code ec;
      fs::rename(staging, dir, ec);  // another test process may have won the race: use its copy
      if (ec) fs::remove_all(staging);
    }
    return dir;
  }();
  return built;
}

// The references' index.json, or nullptr after reporting why it could not be built.
inline const nlohmann::json* references() {
  static const std::unique_ptr<nlohmann::json> index = []() -> std::unique_ptr<nlohmann::json> {
    const std::filesystem::path& dir = references_dir();
    if (dir.empty()) return nullptr;
    auto parsed = std::make_unique<nlohmann::json>(
        nlohmann::json::parse(read_text(dir / "index.json"), nullptr, false));
    if (parsed->is_discarded()) {
      ADD_FAILURE() << "unreadable " << (dir / "index.json");
      return nullptr;
    }
    return parsed;
  }();
  return index.get();
}

// The case named `name` in the references, or nullptr.
inline const nlohmann::json* reference_case(const std::string& name) {
  const nlohmann::json* index = references();
  if (index == nullptr) return nullptr;
  for (const auto& c : (*index)["cases"]) {
    if (c["name"] == name) return &c;
  }
  return nullptr;
}

inline VocabData vocab_from_json(const nlohmann::json& v) {
  VocabData vocab;
  vocab.model = v.value("model", "");
  vocab.pre = v.value("pre", "");
  vocab.tokens = v["tokens"].get<std::vector<std::string>>();
  vocab.scores = v.value("scores", std::vector<float>());
  vocab.token_types = v.value("token_types", std::vector<int32_t>());
  vocab.merges = v.value("merges", std::vector<std::string>());
  vocab.bos_id = v.value("bos_id", -1);
  vocab.eos_id = v.value("eos_id", -1);
  vocab.unknown_id = v.value("unknown_id", -1);
  vocab.add_bos = v.value("add_bos", false);
  vocab.add_space_prefix = v.value("add_space_prefix", false);
  vocab.chat_template = v.value("chat_template", "");
  return vocab;
}

// Loads the tokenizer a reference case describes (a Hugging Face directory or a GGUF vocab).
inline StatusOr<std::unique_ptr<Tokenizer>> load_case(const nlohmann::json& c) {
  if (c["kind"] == "vocab") return load_tokenizer_from_vocab(vocab_from_json(c["vocab"]));
  return load_tokenizer_from_hf_dir((references_dir() / c["dir"].get<std::string>()).string());
}

}  // namespace sieve::models::testing
