#include "read/position.h"

namespace evpipe::read {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

void put_hex(char* out, uint64_t v) {
  for (int i = 15; i >= 0; --i, v >>= 4) out[i] = hex_digits[v & 0xf];
}

// Lowercase only, so that a position has exactly one text form and equal
// positions are equal strings.
bool get_hex(std::string_view s, uint64_t& v) {
  v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return false;
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return true;
}

}  // namespace

std::string encode(position p) {
  std::string out(position_text_size, '0');
  out[0] = '1';
  out[1] = '-';
  put_hex(out.data() + 2, p.tx);
  put_hex(out.data() + 18, static_cast<uint64_t>(p.id));
  return out;
}

std::optional<position> decode(std::string_view text) noexcept {
  if (text.size() != position_text_size || text[0] != '1' || text[1] != '-') return std::nullopt;
  uint64_t tx, id;
  if (!get_hex(text.substr(2, 16), tx) || !get_hex(text.substr(18, 16), id)) return std::nullopt;
  if (id > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;  // ids are BIGSERIAL, never negative
  return position{tx, static_cast<int64_t>(id)};
}

}  // namespace evpipe::read
