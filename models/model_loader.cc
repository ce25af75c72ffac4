#include "models/model_loader.h"

#include <cstdlib>
#include <filesystem>

#include "models/gguf/gguf_model.h"

namespace sieve::models {
namespace fs = std::filesystem;

std::string default_model_path() {
  fs::path cache;
  if (const char* dir = std::getenv("SIEVE_MODEL_CACHE"); dir && *dir) {
    cache = dir;
  } else if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    cache = fs::path(xdg) / "sieve";
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    cache = fs::path(home) / ".cache" / "sieve";
  } else {
    cache = ".cache/sieve";
  }
  return (cache / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf").string();
}

StatusOr<ModelFiles> load_model_files(const std::string& model, LoadFormat format) {
  ModelFiles files;
  files.source = model == "default" ? default_model_path() : model;
  const fs::path path(files.source);
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (model == "default") {
      return NotFoundError("the default model is not installed at " + files.source +
                           "; run scripts/setup.sh");
    }
    return NotFoundError(files.source + ": no such file or directory");
  }
  if (format == LoadFormat::kDummy) {
    const fs::path config = fs::is_directory(path) ? path / "config.json" : path;
    ASSIGN_OR_RETURN(files.config, load_hf_config(config.string()));
    return files;
  }
  if (fs::is_directory(path)) {
    ASSIGN_OR_RETURN(files.config, load_hf_config((path / "config.json").string()));
    ASSIGN_OR_RETURN(files.tensors, load_safetensors_dir(files.source));
    return files;
  }
  if (path.extension() == ".gguf") {
    // Block formats stay as they are; build_weights dequantizes for backends that need f32.
    ASSIGN_OR_RETURN(gguf::GgufModel gguf,
                     gguf::load_gguf_model(files.source, /*keep_blocks=*/true));
    files.config = std::move(gguf.config);
    files.tensors = std::move(gguf.tensors);
    files.gguf_vocab = std::move(gguf.vocab);
    files.is_gguf = true;
    return files;
  }
  return InvalidArgumentError(files.source +
                              ": not a model directory (config.json + *.safetensors) or a .gguf "
                              "file");
}

StatusOr<std::unique_ptr<Tokenizer>> load_model_tokenizer(const ModelFiles& files) {
  if (files.gguf_vocab) return load_tokenizer_from_vocab(*files.gguf_vocab);
  const fs::path dir(files.source);
  std::error_code ec;
  if (fs::is_directory(dir, ec) &&
      (fs::exists(dir / "tokenizer.json", ec) || fs::exists(dir / "tokenizer.model", ec))) {
    return load_tokenizer_from_hf_dir(files.source);
  }
  return std::unique_ptr<Tokenizer>();
}

StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer_for(const std::string& model) {
  const std::string path = model == "default" ? default_model_path() : model;
  std::error_code ec;
  if (!fs::exists(path, ec)) return NotFoundError(path + ": no such file or directory");
  if (fs::path(path).extension() == ".gguf") {
    ASSIGN_OR_RETURN(gguf::GgufFile file, gguf::GgufFile::open(path));
    ASSIGN_OR_RETURN(VocabData vocab, gguf::read_vocab(file));
    return load_tokenizer_from_vocab(vocab);
  }
  ModelFiles files;
  files.source = path;
  return load_model_tokenizer(files);
}

}  // namespace sieve::models
