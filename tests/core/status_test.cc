#include "core/status.h"
#include "core/check.h"

#include <gtest/gtest.h>

namespace sieve {
namespace {

StatusOr<int> parse_positive(int x) {
  if (x <= 0) return InvalidArgumentError("x must be positive");
  return x;
}

StatusOr<int> twice(int x) {
  ASSIGN_OR_RETURN(int v, parse_positive(x));
  return 2 * v;
}

Status check_both(int a, int b) {
  RETURN_IF_ERROR(parse_positive(a).status());
  RETURN_IF_ERROR(parse_positive(b).status());
  return OkStatus();
}

TEST(Status, MacrosPropagateTheFirstError) {
  EXPECT_EQ(*twice(3), 6);
  EXPECT_EQ(twice(-1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(twice(-1).status().message(), "x must be positive");
  EXPECT_TRUE(check_both(1, 2).ok());
  EXPECT_FALSE(check_both(1, 0).ok());
}

TEST(Check, FailureAbortsWithTheValues) {
  const int a = 3, b = 4;
  EXPECT_DEATH(SIEVE_CHECK_EQ(a, b) << "context", "a = 3, b = 4 context");
}

}  // namespace
}  // namespace sieve
