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

// Whether the magnitude of a well-formed number is at least 1 (so a range
// error reading it is an overflow, not an underflow).
bool at_least_one(std::string_view n) noexcept {
  if (!n.empty() && n[0] == '-') n.remove_prefix(1);
  // Decimal exponent of the first significant digit: digits before the
  // point, or minus the zeros after it; then the written exponent.
  int64_t first = 0;
  size_t i = 0;
  bool found = false;
  for (; i < n.size() && digit(n[i]); ++i) {
    if (n[i] != '0' && !found) {
      found = true;
      first = 0;
    }
    if (found) ++first;
  }
  if (found) {
    first -= 1;
  } else if (i < n.size() && n[i] == '.') {
    for (++i; i < n.size() && digit(n[i]); ++i) {
      --first;
      if (n[i] != '0') {
        found = true;
        break;
      }
    }
  }
  if (!found) return false;  // zero
  size_t e = n.find_first_of("eE");
  int64_t exp = 0;
  if (e != std::string_view::npos) {
    std::string_view x = n.substr(e + 1);
    bool neg = !x.empty() && x[0] == '-';
    if (!x.empty() && (x[0] == '-' || x[0] == '+')) x.remove_prefix(1);
    // Exponents past int64 are clamped: only the sign of the sum matters.
    for (char c : x) {
      exp = exp * 10 + (c - '0');
      if (exp > 1'000'000'000'000) break;
    }
    if (neg) exp = -exp;
  }
  return first + exp >= 0;
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

bool mark_big_numbers(std::string_view json, std::string& out) {
  if (std::memchr(json.data(), 0, json.size()) != nullptr || json.find("\\u0000") != std::string_view::npos) {
    return false;
  }
  std::string marked;
  marked.reserve(json.size() + 16);
  bool any = false;
  size_t i = 0;
  while (i < json.size()) {
    const char c = json[i];
    if (c == '"') {
      // A string, escapes and all, copied as it is.
      size_t j = i + 1;
      while (j < json.size() && json[j] != '"') j += json[j] == '\\' ? 2 : 1;
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
      if (beyond_parser(n)) {
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
