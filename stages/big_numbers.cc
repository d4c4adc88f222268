#include "stages/big_numbers.h"

#include <charconv>
#include <cstdint>
#include <cstring>
#include <system_error>

namespace evpipe::stages {
namespace {

bool digit(char c) noexcept { return c >= '0' && c <= '9'; }

// The length of the JSON number grammar's match at the start of s (0: none).
size_t number_length(std::string_view s) noexcept {
  size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  if (i >= s.size() || !digit(s[i])) return 0;
  if (s[i] == '0') {
    ++i;
  } else {
    while (i < s.size() && digit(s[i])) ++i;
  }
  if (i < s.size() && s[i] == '.') {
    if (i + 1 >= s.size() || !digit(s[i + 1])) return 0;
    i += 2;
    while (i < s.size() && digit(s[i])) ++i;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    size_t j = i + 1;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    if (j >= s.size() || !digit(s[j])) return 0;
    while (j < s.size() && digit(s[j])) ++j;
    i = j;
  }
  return i;
}

// The decimal shape of a well-formed number: the exponent of its first
// significant digit (1e400: 400; 0.05: -2), and its scale (digits after the
// point once the exponent is applied; 1.25e1: 1).
struct decimal_shape {
  bool zero = true;
  int64_t first = 0;
  int64_t scale = 0;
};

decimal_shape shape_of(std::string_view n) noexcept {
  if (!n.empty() && n[0] == '-') n.remove_prefix(1);
  decimal_shape d;
  size_t i = 0;
  int64_t int_digits = 0;  // after leading zeros
  for (; i < n.size() && digit(n[i]); ++i) {
    if (n[i] != '0' || int_digits > 0) ++int_digits;
  }
  int64_t frac_digits = 0, frac_zeros = 0;
  if (i < n.size() && n[i] == '.') {
    for (++i; i < n.size() && digit(n[i]); ++i) {
      ++frac_digits;
      if (int_digits == 0 && d.zero) {
        if (n[i] == '0') {
          ++frac_zeros;
        } else {
          d.zero = false;
        }
      }
    }
  }
  if (int_digits > 0) d.zero = false;
  int64_t exp = 0;
  if (i < n.size() && (n[i] == 'e' || n[i] == 'E')) {
    std::string_view x = n.substr(i + 1);
    const bool neg = !x.empty() && x[0] == '-';
    if (!x.empty() && (x[0] == '-' || x[0] == '+')) x.remove_prefix(1);
    // Exponents past any limit are clamped: only how far past matters.
    for (char c : x) {
      exp = exp * 10 + (c - '0');
      if (exp > 1'000'000'000'000) break;
    }
    if (neg) exp = -exp;
  }
  d.first = (int_digits > 0 ? int_digits - 1 : -(frac_zeros + 1)) + exp;
  d.scale = frac_digits - exp > 0 ? frac_digits - exp : 0;
  return d;
}

// Whether the magnitude of a well-formed number is at least 1 (so a range
// error reading it is an overflow, not an underflow).
bool at_least_one(std::string_view n) noexcept {
  const decimal_shape d = shape_of(n);
  return !d.zero && d.first >= 0;
}

// Whether PostgreSQL's numeric (what jsonb holds a number as) can: fewer than
// 131,072 digits before the point and at most 16,383 after it.
bool numeric_holds(std::string_view n) noexcept {
  const decimal_shape d = shape_of(n);
  return (d.zero || d.first < 131072) && d.scale <= 16383;
}

// Whether the parser refuses this well-formed number for its size.
bool beyond_parser(std::string_view n) noexcept {
  const char* b = n.data();
  const char* e = n.data() + n.size();
  if (is_integer_literal(n)) {
    if (n[0] == '-') {
      int64_t v;
      return std::from_chars(b, e, v).ec == std::errc::result_out_of_range;
    }
    uint64_t v;
    return std::from_chars(b, e, v).ec == std::errc::result_out_of_range;
  }
  double d;
  return std::from_chars(b, e, d).ec == std::errc::result_out_of_range && at_least_one(n);
}

}  // namespace

bool is_integer_literal(std::string_view number) noexcept {
  return number.find_first_of(".eE") == std::string_view::npos;
}

bool mark_big_numbers(std::string_view json, std::string& out, bool structure_only) {
  if (!structure_only && std::memchr(json.data(), 0, json.size()) != nullptr) return false;
  std::string marked;
  marked.reserve(json.size() + 16);
  bool any = false;
  bool nul_escape = false;  // a \u0000 in some string
  size_t i = 0;
  while (i < json.size()) {
    const char c = json[i];
    if (c == '"') {
      // A string, escapes and all, copied as it is.
      size_t j = i + 1;
      while (j < json.size() && json[j] != '"') {
        if (json[j] == '\\') {
          if (json.compare(j, 6, "\\u0000") == 0) nul_escape = true;
          j += 2;
        } else {
          ++j;
        }
      }
      j = j < json.size() ? j + 1 : json.size();
      marked.append(json, i, j - i);
      i = j;
      continue;
    }
    if (c == '-' || digit(c)) {
      size_t len = number_length(json.substr(i));
      if (len == 0) {
        // Not a number the grammar allows: copied, for the parser to refuse.
        size_t j = i + 1;
        while (j < json.size() && (digit(json[j]) || json[j] == '.' || json[j] == 'e' || json[j] == 'E' ||
                                   json[j] == '+' || json[j] == '-')) {
          ++j;
        }
        marked.append(json, i, j - i);
        i = j;
        continue;
      }
      std::string_view n = json.substr(i, len);
      // A number where a key belongs is left for the parser to refuse.
      size_t after = i + len;
      while (after < json.size() && (json[after] == ' ' || json[after] == '\t' || json[after] == '\n' ||
                                     json[after] == '\r')) {
        ++after;
      }
      const bool key = after < json.size() && json[after] == ':';
      if (!key && beyond_parser(n) && numeric_holds(n)) {
        marked.append("\"\\u0000");
        marked.append(n);
        marked.push_back('"');
        any = true;
      } else {
        marked.append(n);
      }
      i += len;
      continue;
    }
    marked.push_back(c);
    ++i;
  }
  if (nul_escape && !structure_only) return false;
  if (any) out = std::move(marked);
  return any;
}

void unmark_big_numbers(std::string& json) {
  static constexpr std::string_view open = "\"\\u0000";
  size_t at = json.find(open);
  if (at == std::string::npos) return;
  std::string out;
  out.reserve(json.size());
  size_t from = 0;
  while (at != std::string::npos) {
    size_t end = json.find('"', at + open.size());
    if (end == std::string::npos) break;
    out.append(json, from, at - from);
    out.append(json, at + open.size(), end - at - open.size());
    from = end + 1;
    at = json.find(open, from);
  }
  out.append(json, from, std::string::npos);
  json = std::move(out);
}

}  // namespace evpipe::stages
