#include "core/logging.h"

#include <memory>
#include <string>

#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace sieve {

Status set_log_level(std::string_view level) {
  static const bool initialized = [] {
    auto logger = spdlog::stderr_color_mt("sieve");
    logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
    spdlog::set_default_logger(logger);
    return true;
  }();
  (void)initialized;
  const spdlog::level::level_enum parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return InvalidArgumentError("--log-level: unknown level '" + std::string(level) +
                                "' (expected trace, debug, info, warn, error, critical or off)");
  }
  spdlog::set_level(parsed);
  return OkStatus();
}

}  // namespace sieve
