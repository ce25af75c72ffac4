#pragma once
// Helpers shared by the GGUF tests: a fresh temporary directory, running the reference Python
// scripts, and reading or writing whole files.

#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace sieve::models::gguf::testing {

// A new empty directory under the test's temporary directory.
inline std::string make_temp_dir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                                    ("sieve_gguf_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Runs tests/models/gguf/<script> with the project's Python; true on exit status 0.
inline bool run_python(const std::string& script, const std::string& args) {
  const std::string command = std::string(SIEVE_PYTHON) + " " + SIEVE_SOURCE_DIR +
                              "/tests/models/gguf/" + script + " " + args;
  const int rc = std::system(command.c_str());
  if (rc != 0) ADD_FAILURE() << "command failed (" << rc << "): " << command;
  return rc == 0;
}

inline std::vector<std::byte> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  for (size_t i = 0; i < chars.size(); ++i) bytes[i] = static_cast<std::byte>(chars[i]);
  return bytes;
}

inline std::vector<float> read_floats(const std::string& path) {
  const std::vector<std::byte> bytes = read_bytes(path);
  std::vector<float> floats(bytes.size() / sizeof(float));
  std::copy_n(bytes.data(), floats.size() * sizeof(float),
              reinterpret_cast<std::byte*>(floats.data()));
  return floats;
}

// The directory of files make_gguf_files.py wrote, built once per test binary ("" on failure).
inline const std::string& gguf_fixture_dir() {
  static const std::string dir = [] {
    const std::string d = make_temp_dir("files");
    return run_python("make_gguf_files.py", d + " 1234") ? d : std::string();
  }();
  return dir;
}

// The offset just past the first (or, with `last`, the last) GGUF string `text` (u64 length,
// then bytes); SIZE_MAX if absent. Tensor infos follow the metadata, so `last` finds a tensor's
// name even when a metadata key has the same text.
inline size_t offset_after_string(const std::vector<std::byte>& bytes, const std::string& text,
                                  bool last = false) {
  std::vector<std::byte> needle(8 + text.size());
  const uint64_t length = text.size();
  std::memcpy(needle.data(), &length, 8);
  std::memcpy(needle.data() + 8, text.data(), text.size());
  const auto it = last ? std::find_end(bytes.begin(), bytes.end(), needle.begin(), needle.end())
                       : std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
  if (it == bytes.end()) return SIZE_MAX;
  return static_cast<size_t>(it - bytes.begin()) + needle.size();
}

// Overwrites bytes at `offset` with the little-endian `value`.
template <typename T>
void poke(std::vector<std::byte>& bytes, size_t offset, T value) {
  ASSERT_LE(offset + sizeof(T), bytes.size());
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

inline void write_bytes(const std::string& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

}  // namespace sieve::models::gguf::testing
