#include "server/cli_tokenize.h"

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "models/model_loader.h"
#include "nlohmann/json.hpp"
#include "server/cli_common.h"

namespace sieve::server {
namespace {

struct TokenizeOptions {
  std::string model = "default";
  std::string text;
  std::string file;
  bool add_special_tokens = false;
  bool json = false;
};

Status run_tokenize(const TokenizeOptions& o) {
  std::string text = o.text;
  if (!o.file.empty()) {
    std::ifstream in(o.file, std::ios::binary);
    if (!in) return NotFoundError(o.file + ": cannot open");
    std::stringstream buffer;
    buffer << in.rdbuf();
    text = buffer.str();
  }
  // Only the tokenizer is needed: GGUF weights are not dequantized for this.
  ASSIGN_OR_RETURN(std::unique_ptr<models::Tokenizer> tokenizer, models::load_tokenizer_for(o.model));
  if (!tokenizer) return InvalidArgumentError(o.model + ": the model has no tokenizer");
  const std::vector<int32_t> ids = tokenizer->encode(text, o.add_special_tokens);
  if (o.json) {
    std::printf("%s\n", nlohmann::json({{"token_ids", ids}}).dump().c_str());
  } else {
    for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %d" : "%d", ids[i]);
    std::printf("\n");
  }
  return OkStatus();
}

}  // namespace

void register_tokenize(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  cmd->add_option("--model", options->model, "A Hugging Face directory, a .gguf file or 'default'")
      ->capture_default_str();
  auto* text = cmd->add_option("--text", options->text, "The text");
  auto* file = cmd->add_option("--file", options->file, "Read the text from a file");
  text->excludes(file);
  cmd->add_flag("--add-special-tokens", options->add_special_tokens,
                "Add BOS/EOS as the tokenizer's post-processor does (off: as HF's "
                "add_special_tokens=False)");
  cmd->add_flag("--json", options->json, "Print {\"token_ids\": [...]} as the last line");
  cmd->callback([options, text, file, &exit_code] {
    if (text->count() == 0 && file->count() == 0) {
      exit_code = report_error(InvalidArgumentError("give --text or --file"));
      return;
    }
    const Status status = run_tokenize(*options);
    if (!status.ok()) exit_code = report_error(status);
  });
}

}  // namespace sieve::server
