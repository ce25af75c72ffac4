#pragma once
// SIEVE_CHECK: broken invariants (bugs), never user input. Logs the condition, the streamed
// values, file and line, then aborts.
//
//   SIEVE_CHECK(n <= capacity) << "n=" << n;
//   SIEVE_CHECK_EQ(a.dtype(), DType::kF32);

#include <sstream>

namespace sieve::internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Lets `cond ? (void)0 : Voidify() & stream` type-check as a statement.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace sieve::internal

#define SIEVE_CHECK(cond)                 \
  (cond) ? (void)0                        \
         : ::sieve::internal::Voidify() & \
               ::sieve::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define SIEVE_CHECK_OP(a, op, b) \
  SIEVE_CHECK((a)op(b)) << #a " = " << (a) << ", " #b " = " << (b) << " "
#define SIEVE_CHECK_EQ(a, b) SIEVE_CHECK_OP(a, ==, b)
#define SIEVE_CHECK_NE(a, b) SIEVE_CHECK_OP(a, !=, b)
#define SIEVE_CHECK_LT(a, b) SIEVE_CHECK_OP(a, <, b)
#define SIEVE_CHECK_LE(a, b) SIEVE_CHECK_OP(a, <=, b)
#define SIEVE_CHECK_GT(a, b) SIEVE_CHECK_OP(a, >, b)
#define SIEVE_CHECK_GE(a, b) SIEVE_CHECK_OP(a, >=, b)
