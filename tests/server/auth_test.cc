// The API key check HTTP and gRPC share, and request ids made safe to log.

#include "server/auth.h"

#include <gtest/gtest.h>

#include "server/frontend.h"

namespace sieve::server {
namespace {

TEST(Auth, BearerSchemeInAnyCaseWithTheExactKey) {
  EXPECT_TRUE(is_authorized("Bearer s3cret", "s3cret"));
  EXPECT_TRUE(is_authorized("bearer s3cret", "s3cret"));
  EXPECT_TRUE(is_authorized("BEARER  s3cret", "s3cret"));
  EXPECT_FALSE(is_authorized("", "s3cret"));
  EXPECT_FALSE(is_authorized("Bearer", "s3cret"));
  EXPECT_FALSE(is_authorized("Bearer ", "s3cret"));
  EXPECT_FALSE(is_authorized("Bearer s3cre", "s3cret"));
  EXPECT_FALSE(is_authorized("Bearer s3cretX", "s3cret"));
  EXPECT_FALSE(is_authorized("Bearer S3cret", "s3cret"));
  EXPECT_FALSE(is_authorized("Basic s3cret", "s3cret"));
  EXPECT_FALSE(is_authorized("Bearers3cret", "s3cret"));
  EXPECT_FALSE(is_authorized("s3cret", "s3cret"));
  // No key configured: everything passes.
  EXPECT_TRUE(is_authorized("", ""));
}

TEST(RequestId, ControlCharactersAndSpacesCannotForgeLogLines) {
  EXPECT_EQ(clean_request_id("abc-123_X.y:z"), "abc-123_X.y:z");
  EXPECT_EQ(clean_request_id("a\nrequest x: forged\r\x1b[31m"), "a_request_x:_forged__[31m");
  EXPECT_EQ(clean_request_id("caf\xc3\xa9"), "caf__");
  EXPECT_EQ(clean_request_id(std::string(500, 'a')).size(), kMaxRequestIdBytes);
  EXPECT_EQ(clean_request_id(""), "");
}

}  // namespace
}  // namespace sieve::server
