#include "server/auth.h"

#include <cctype>

namespace sieve::server {

bool is_authorized(std::string_view authorization, std::string_view api_key) {
  if (api_key.empty()) return true;
  constexpr std::string_view kScheme = "bearer";
  if (authorization.size() <= kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) return false;
  }
  size_t start = kScheme.size();
  if (authorization[start] != ' ') return false;
  while (start < authorization.size() && authorization[start] == ' ') ++start;
  const std::string_view token = authorization.substr(start);
  // Every byte of the key is looked at whatever the token is, so the time says nothing about
  // how much of a guess was right (only whether its length was).
  unsigned char diff = token.size() == api_key.size() ? 0 : 1;
  for (size_t i = 0; i < api_key.size(); ++i) {
    const unsigned char given = i < token.size() ? static_cast<unsigned char>(token[i]) : 0;
    diff |= static_cast<unsigned char>(given ^ static_cast<unsigned char>(api_key[i]));
  }
  return diff == 0;
}

}  // namespace sieve::server
