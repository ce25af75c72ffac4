#pragma once
// A read-only memory-mapped file. Weights are used straight from the mapping where their dtype
// allows, so a model file is never copied twice.

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "core/status.h"

namespace sieve {

class MappedFile {
 public:
  // Maps the whole file; an error names the path and the reason.
  static StatusOr<std::shared_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const std::byte* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const std::byte* data_;
  size_t size_;
};

}  // namespace sieve
