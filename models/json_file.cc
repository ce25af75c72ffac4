#include "models/json_file.h"

#include <fstream>
#include <sstream>

namespace sieve::models {

StatusOr<nlohmann::json> read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError(path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json obj = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (obj.is_discarded()) return InvalidArgumentError(path + ": malformed JSON");
  return obj;
}

}  // namespace sieve::models
