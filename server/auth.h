#pragma once
// The API key check both transports share: HTTP's `Authorization` header and gRPC's
// `authorization` metadata carry the same "Bearer <key>" (RFC 6750), so one function decides.

#include <string_view>

namespace sieve::server {

// True when `authorization` is "Bearer <api_key>": the scheme in any case (RFC 6750 and RFC 9110
// say it is case-insensitive), one or more spaces, then the key, compared in time that does not
// depend on where the first difference is. An empty `api_key` authorizes everything.
bool is_authorized(std::string_view authorization, std::string_view api_key);

}  // namespace sieve::server
