#include "io/sources/nats/nats_reply.h"

namespace evpipe::io {

std::optional<uint64_t> nats_delivery_count(std::string_view reply) noexcept {
  constexpr std::string_view prefix = "$JS.ACK.";
  if (!reply.starts_with(prefix)) return std::nullopt;
  reply.remove_prefix(prefix.size());
  // The first five tokens, and how many there are (counting stops at 9:
  // the forms differ only in fewer than 9 or not).
  std::string_view tokens[5];
  size_t count = 0;
  for (size_t at = 0; count < 9;) {
    const size_t dot = reply.find('.', at);
    const std::string_view token = reply.substr(at, dot == std::string_view::npos ? std::string_view::npos : dot - at);
    if (count < 5) tokens[count] = token;
    ++count;
    if (dot == std::string_view::npos) break;
    at = dot + 1;
  }
  std::string_view delivered;
  if (count == 7) {
    delivered = tokens[2];
  } else if (count >= 9) {
    delivered = tokens[4];
  } else {
    return std::nullopt;
  }
  if (delivered.empty()) return std::nullopt;
  uint64_t n = 0;
  for (char c : delivered) {
    if (c < '0' || c > '9') return std::nullopt;
    if (__builtin_mul_overflow(n, 10u, &n) || __builtin_add_overflow(n, static_cast<uint64_t>(c - '0'), &n)) {
      return std::nullopt;  // past 64 bits
    }
  }
  return n;
}

}  // namespace evpipe::io
