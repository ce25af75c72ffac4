#pragma once
// Errors a user can cause are values: absl::Status / absl::StatusOr<T>, whose codes are gRPC's.
// Debian's libabsl (which gRPC already needs) links under C++20, so no hand-written copy.

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sieve {

using Status = absl::Status;
template <typename T>
using StatusOr = absl::StatusOr<T>;

using absl::InvalidArgumentError;
using absl::NotFoundError;
using absl::OkStatus;
using absl::OutOfRangeError;
using absl::ResourceExhaustedError;
using absl::UnimplementedError;
using absl::InternalError;
using absl::FailedPreconditionError;

}  // namespace sieve

#define SIEVE_STATUS_CONCAT_INNER(a, b) a##b
#define SIEVE_STATUS_CONCAT(a, b) SIEVE_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                               \
  do {                                                      \
    ::absl::Status sieve_status_ = (expr);                  \
    if (!sieve_status_.ok()) return sieve_status_;          \
  } while (false)

// `ASSIGN_OR_RETURN(auto x, f())`: unwraps a StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  SIEVE_ASSIGN_OR_RETURN_IMPL(SIEVE_STATUS_CONCAT(sieve_statusor_, __LINE__), lhs, expr)
#define SIEVE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return std::move(tmp).status();    \
  lhs = std::move(tmp).value()
