// libFuzzer target over the gRPC request conversion: bytes -> sieve.v1.GenerateRequest (or, when
// the first byte is odd, TokenizeRequest) via ParseFromArray -> request_from_proto
// (tokenize_from_proto). A request that parses becomes a valid engine request or an
// INVALID_ARGUMENT naming the field: never a crash, a hang, an ASan or UBSan report, or another
// code. A valid request has a non-empty prompt of in-vocabulary ids that fits the context with
// max_tokens, and sampling parameters the engine accepts.
//
// Build and run (clang; see fuzz/README.md):
//   cmake --build build-fuzz -j2 --target grpc_request_fuzz
//   build-fuzz/fuzz/grpc_request_fuzz -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
//       /tmp/grpc_corpus fuzz/corpus/grpc_request

#include <cstddef>
#include <cstdint>

#include "core/check.h"
#include "fuzz/fuzz_model_context.h"
#include "server/grpc_request.h"

namespace {

using sieve::Status;

sieve::server::ModelContext* g_model = nullptr;

void check_invalid(const Status& status) {
  SIEVE_CHECK(status.code() == absl::StatusCode::kInvalidArgument) << status;
  SIEVE_CHECK(!status.message().empty());
  SIEVE_CHECK(sieve::server::to_grpc(status).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
}

void check_ids(const std::vector<int32_t>& ids) {
  for (int32_t id : ids) SIEVE_CHECK(id >= 0 && id < g_model->config.vocab_size) << id;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_model = sieve::fuzz::make_fuzz_model_context();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t* bytes = data + 1;
  const int num_bytes = static_cast<int>(size - 1);
  if (data[0] % 2 == 0) {
    sieve::v1::GenerateRequest proto;
    if (!proto.ParseFromArray(bytes, num_bytes)) return 0;
    auto request = sieve::server::request_from_proto(proto, *g_model);
    if (!request.ok()) return check_invalid(request.status()), 0;
    SIEVE_CHECK(!request->prompt_token_ids.empty());
    SIEVE_CHECK(static_cast<int64_t>(request->prompt_token_ids.size()) +
                    request->params.max_tokens <=
                g_model->max_model_len);
    check_ids(request->prompt_token_ids);
    SIEVE_CHECK(sieve::engine::validate(request->params).ok());
  } else {
    sieve::v1::TokenizeRequest proto;
    if (!proto.ParseFromArray(bytes, num_bytes)) return 0;
    auto ids = sieve::server::tokenize_from_proto(proto, *g_model);
    if (!ids.ok()) return check_invalid(ids.status()), 0;
    check_ids(*ids);
  }
  return 0;
}
