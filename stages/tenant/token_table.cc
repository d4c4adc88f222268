#include "stages/tenant/token_table.h"

#include <sys/random.h>
#include <xxhash.h>

#include <algorithm>
#include <random>

namespace evpipe::stages::tenant {

token_table::token_table() : token_table(std::vector<std::pair<std::string, std::string>>{}) {}

token_table::token_table(const std::vector<std::pair<std::string, std::string>>& tokens) {
  // The key: from the kernel's random pool (std::random_device as a fallback).
  size_t got = 0;
  while (got < key_.size()) {
    ssize_t n = ::getrandom(key_.data() + got, key_.size() - got, 0);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got < key_.size()) {
    std::random_device rd;
    for (auto& b : key_) b = static_cast<unsigned char>(rd());
  }
  for (const auto& [token, tenant] : tokens) tokens_.emplace(digest_of(token), bound_token{token, tenant});
}

token_table::digest token_table::digest_of(std::string_view token) const noexcept {
  auto h = XXH3_128bits_withSecret(token.data(), token.size(), key_.data(), key_.size());
  return {h.high64, h.low64};
}

const std::string* token_table::find(std::string_view token) const {
  auto it = tokens_.find(digest_of(token));
  if (it == tokens_.end()) return nullptr;
  // A digest collision is not a match: compare the whole token, every byte.
  const std::string& bound = it->second.token;
  unsigned char diff = bound.size() == token.size() ? 0 : 1;
  const size_t n = std::min(bound.size(), token.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(bound[i] ^ token[i]);
  return diff == 0 ? &it->second.tenant : nullptr;
}

}  // namespace evpipe::stages::tenant
