#pragma once
// Bearer tokens and what each is bound to (a tenant, or "" for a token that
// binds none), looked up in constant time in the secrets: the presented
// token is hashed with a key drawn at random for this table (keyed XXH3-128),
// the lookup compares those fixed-size digests (an attacker cannot choose
// bytes of them, so an early exit there tells nothing about any token's
// bytes), and the one candidate found is then compared with the token byte by
// byte without an early exit. Used by the HTTP source's binding and by the
// stream server (its tokens_file and its bearer_token).
//
// Built once, then immutable: thread-safe.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <absl/container/flat_hash_map.h>

namespace evpipe::stages::tenant {

class token_table {
 public:
  token_table();
  // (token, tenant) pairs; a token given twice keeps its first binding (the
  // config loader refuses duplicates before this).
  explicit token_table(const std::vector<std::pair<std::string, std::string>>& tokens);

  // What `token` is bound to; nullptr for an unknown token.
  [[nodiscard]] const std::string* find(std::string_view token) const;
  [[nodiscard]] bool empty() const noexcept { return tokens_.empty(); }
  [[nodiscard]] size_t size() const noexcept { return tokens_.size(); }

 private:
  struct digest {
    uint64_t hi = 0, lo = 0;
    bool operator==(const digest&) const = default;
    template <typename H>
    friend H AbslHashValue(H h, const digest& d) {
      return H::combine(std::move(h), d.hi, d.lo);
    }
  };
  struct bound_token {
    std::string token, tenant;
  };
  [[nodiscard]] digest digest_of(std::string_view token) const noexcept;
  std::array<unsigned char, 192> key_{};  // XXH3 secret, random per table
  absl::flat_hash_map<digest, bound_token> tokens_;
};

}  // namespace evpipe::stages::tenant
