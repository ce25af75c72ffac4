#pragma once
// Logging through spdlog. Call sites use spdlog directly (spdlog::info, SPDLOG_DEBUG); this
// header only owns the set-up and the level names the `--log-level` flag accepts.

#include <string_view>

#include "core/status.h"

namespace sieve {

// Sets the process-wide level: trace, debug, info, warn, error, critical or off. Logs go to stderr
// so stdout stays clean for `--json` output.
Status set_log_level(std::string_view level);

}  // namespace sieve
