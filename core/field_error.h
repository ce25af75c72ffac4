#pragma once
// The request field a bad-input error is about ("max_tokens", "stop_token_ids") travels with
// the status as data, so the API layers report it (OpenAI's `param`) without reading it back
// out of the message.

#include <optional>
#include <string>

#include "absl/strings/cord.h"
#include "core/status.h"

namespace sieve {

// The status payload's key (a type URL to absl).
inline constexpr const char* kFieldPayload = "sieve.field";

// INVALID_ARGUMENT about `field`; `message` is the whole text shown to the client.
inline Status InvalidFieldError(const std::string& field, const std::string& message) {
  Status status = InvalidArgumentError(message);
  status.SetPayload(kFieldPayload, absl::Cord(std::string(field)));
  return status;
}

// The field an error names, or empty.
inline std::string error_field(const Status& status) {
  const auto field = status.GetPayload(kFieldPayload);
  return field ? std::string(*field) : std::string();
}

}  // namespace sieve
