#include "stages/route/pg_binary.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <limits>

#include "stages/validate.h"

namespace evpipe::stages::route {

namespace {

bool digits(std::string_view s, size_t& p, int n, int& v) noexcept {
  if (p + n > s.size()) return false;
  v = 0;
  for (int i = 0; i < n; ++i) {
    char c = s[p + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  p += n;
  return true;
}

// Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
// (Howard Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

parse_status parse_timestamp(std::string_view s, int64_t& pg_us) noexcept {
  // The grammar is checked once, by the validator's own rule, so that what
  // an envelope's ts accepts and what a timestamptz column accepts agree.
  if (!is_iso8601_datetime(s)) return parse_status::malformed;
  size_t p = 0;
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  (void)digits(s, p, 4, year);
  ++p;
  (void)digits(s, p, 2, month);
  ++p;
  (void)digits(s, p, 2, day);
  ++p;
  (void)digits(s, p, 2, hour);
  ++p;
  (void)digits(s, p, 2, minute);
  int64_t frac_us = 0;
  if (p < s.size() && s[p] == ':') {
    ++p;
    (void)digits(s, p, 2, second);
    if (p < s.size() && (s[p] == '.' || s[p] == ',')) {
      ++p;
      int n = 0;
      bool round_up = false;
      for (; p < s.size() && s[p] >= '0' && s[p] <= '9'; ++p, ++n) {
        if (n < 6) {
          frac_us = frac_us * 10 + (s[p] - '0');
        } else if (n == 6) {
          round_up = s[p] >= '5';
        }
      }
      for (; n < 6; ++n) frac_us *= 10;
      if (round_up) ++frac_us;
    }
  }
  if (year == 0) return parse_status::out_of_range;
  int64_t offset_s = 0;
  if (p < s.size() && s[p] != 'Z' && s[p] != 'z') {
    int sign = s[p++] == '-' ? -1 : 1;
    int oh = 0, om = 0;
    (void)digits(s, p, 2, oh);
    if (p < s.size() && s[p] == ':') ++p;
    if (p < s.size()) (void)digits(s, p, 2, om);
    offset_s = sign * (oh * 3600 + om * 60);
  }
  int64_t days = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  int64_t unix_s = days * 86400 + hour * 3600 + minute * 60 + second - offset_s;
  pg_us = unix_s * 1'000'000 + frac_us - unix_to_pg_epoch_us;
  return parse_status::ok;
}

bool parse_uuid(std::string_view s, uint8_t (&out)[16]) noexcept {
  if (!is_pg_uuid(s)) return false;
  int n = 0;
  for (char c : s) {
    int v = hex_value(c);
    if (v < 0) continue;  // braces and hyphens
    if (n % 2 == 0) {
      out[n / 2] = static_cast<uint8_t>(v << 4);
    } else {
      out[n / 2] |= static_cast<uint8_t>(v);
    }
    ++n;
  }
  return n == 32;
}

parse_status append_from_text(std::string& out, config::column_type type, std::string_view text,
                              std::string* problem) {
  using config::column_type;
  auto fail = [&](parse_status st, std::string why) {
    if (problem) *problem = std::move(why);
    return st;
  };
  // For the failure's message only: made when one is reported.
  auto quoted = [&] { return "\"" + std::string(text.substr(0, 64)) + "\""; };
  switch (type) {
    case column_type::text:
      if (text.find('\0') != std::string_view::npos) return fail(parse_status::out_of_range, "text cannot hold U+0000");
      pg_binary::append_text(out, text);
      return parse_status::ok;
    case column_type::int4:
    case column_type::int8: {
      int64_t v = 0;
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec == std::errc::result_out_of_range) {
        return fail(parse_status::out_of_range, quoted() + " is out of range for " + config::column_type_name(type));
      }
      if (ec != std::errc{} || ptr != text.data() + text.size() || text.empty()) {
        return fail(parse_status::malformed, quoted() + " is not an integer");
      }
      if (type == column_type::int4) {
        if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
          return fail(parse_status::out_of_range, quoted() + " is out of range for int4");
        }
        pg_binary::append_int4(out, static_cast<int32_t>(v));
      } else {
        pg_binary::append_int8(out, v);
      }
      return parse_status::ok;
    }
    case column_type::float8: {
      double v = 0;
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec == std::errc::result_out_of_range) return fail(parse_status::out_of_range, quoted() + " is out of range for float8");
      if (ec != std::errc{} || ptr != text.data() + text.size() || text.empty()) {
        return fail(parse_status::malformed, quoted() + " is not a number");
      }
      // from_chars reads "nan" and "inf": a finite number is what a reader expects.
      if (!std::isfinite(v)) return fail(parse_status::out_of_range, quoted() + " is not a finite number");
      pg_binary::append_float8(out, v);
      return parse_status::ok;
    }
    case column_type::boolean:
      if (text == "true") {
        pg_binary::append_bool(out, true);
      } else if (text == "false") {
        pg_binary::append_bool(out, false);
      } else {
        return fail(parse_status::malformed, quoted() + " is not true or false");
      }
      return parse_status::ok;
    case column_type::timestamptz: {
      int64_t us = 0;
      auto st = parse_timestamp(text, us);
      if (st == parse_status::malformed) return fail(st, quoted() + " is not an ISO 8601 date-time");
      if (st == parse_status::out_of_range) return fail(st, quoted() + " is out of range for timestamptz");
      pg_binary::append_timestamptz(out, us);
      return parse_status::ok;
    }
    case column_type::uuid: {
      uint8_t b[16];
      if (!parse_uuid(text, b)) return fail(parse_status::malformed, quoted() + " is not a UUID");
      pg_binary::append_uuid(out, b);
      return parse_status::ok;
    }
    case column_type::jsonb:
      // Text is stored as a JSON string; only config defaults reach here
      // with JSON text, and route_set checks those with the JSON parser.
      return fail(parse_status::malformed, "jsonb from text is handled by the caller");
  }
  return fail(parse_status::malformed, "unknown type");
}

}  // namespace evpipe::stages::route
