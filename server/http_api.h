#pragma once
// The HTTP API: routes, the optional API key, and the OpenAI-compatible endpoints over the
// frontend. /v1/completions, /v1/chat/completions, /v1/models, /tokenize, /detokenize need the
// key when one is set; /health, /version and /metrics stay open.

#include <string>

#include "server/frontend.h"
#include "server/http_server.h"

namespace sieve::server {

struct HttpApiOptions {
  std::string api_key;  // empty: no authentication
};

// The handler for HttpServer. `frontend` outlives the server that calls it.
HttpServer::Handler make_http_api(Frontend& frontend, HttpApiOptions options);

}  // namespace sieve::server
