#pragma once
// sieve.v1 messages <-> engine types: a GenerateRequest becomes one validated engine request
// (INVALID_ARGUMENT naming the field), an engine output one GenerateResponse. Pure functions,
// tested without a server.

#include <vector>

#include "core/status.h"
#include "engine/request.h"
#include "grpcpp/support/status.h"
#include "nlohmann/json.hpp"
#include "proto/sieve.pb.h"
#include "server/compression.h"
#include "server/model_context.h"

namespace sieve::server {

// The prompt, sampling parameters and compression of `request`, checked as the HTTP API checks
// them (model name, token ids, roles, ranges, context length).
StatusOr<engine::Request> request_from_proto(const v1::GenerateRequest& request,
                                             const ModelContext& model);

// Token ids of a TokenizeRequest's text or conversation.
StatusOr<std::vector<int32_t>> tokenize_from_proto(const v1::TokenizeRequest& request,
                                                   const ModelContext& model);

// Fills `response` with one engine output.
void output_to_proto(const engine::RequestOutput& out, v1::GenerateResponse* response);

// google.protobuf.Struct (a compression's params) as JSON; INVALID_ARGUMENT naming `key` when it
// nests deeper than kMaxJsonDepth (protobuf's own parse limit, 100 messages, comes first on the
// wire; this bounds the recursion whatever built the message).
StatusOr<nlohmann::json> struct_to_json(const google::protobuf::Struct& value,
                                        const std::string& key);

// The same code and message as a gRPC status (absl's codes are gRPC's).
grpc::Status to_grpc(const Status& status);

}  // namespace sieve::server
