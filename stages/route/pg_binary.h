#pragma once
// PostgreSQL's binary COPY forms of the column types a route writes, and the
// text conversions of topic segments and defaults. Pure functions, no state.
//
// Each append_* writes one field: its 4-byte big-endian length, then the
// bytes (src/backend/utils/adt/*send functions define the forms).

#include <bit>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/route_config.h"

namespace evpipe::stages::route {

namespace pg_binary {

inline void put_u16(std::string& out, uint16_t v) {
  char b[2] = {static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(b, 2);
}
inline void put_u32(std::string& out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out.append(b, 4);
}
inline void put_u64(std::string& out, uint64_t v) {
  put_u32(out, static_cast<uint32_t>(v >> 32));
  put_u32(out, static_cast<uint32_t>(v));
}
// A fixed-width field (its length, then the value, both big-endian) in one
// append: a row of numbers is mostly these, and each append checks the
// string's capacity.
inline void append_fixed(std::string& out, uint32_t value) {
  const char b[8] = {0, 0, 0, 4, static_cast<char>(value >> 24), static_cast<char>(value >> 16),
                     static_cast<char>(value >> 8), static_cast<char>(value)};
  out.append(b, 8);
}
inline void append_fixed(std::string& out, uint64_t value) {
  const char b[12] = {0, 0, 0, 8, static_cast<char>(value >> 56), static_cast<char>(value >> 48),
                      static_cast<char>(value >> 40), static_cast<char>(value >> 32), static_cast<char>(value >> 24),
                      static_cast<char>(value >> 16), static_cast<char>(value >> 8), static_cast<char>(value)};
  out.append(b, 12);
}

inline void append_null(std::string& out) { put_u32(out, 0xFFFFFFFFu); }
inline void append_int4(std::string& out, int32_t v) { append_fixed(out, static_cast<uint32_t>(v)); }
inline void append_int8(std::string& out, int64_t v) { append_fixed(out, static_cast<uint64_t>(v)); }
inline void append_float8(std::string& out, double v) { append_fixed(out, std::bit_cast<uint64_t>(v)); }
inline void append_bool(std::string& out, bool v) {
  put_u32(out, 1);
  out.push_back(v ? '\1' : '\0');
}
// text and varchar: the UTF-8 bytes.
inline void append_text(std::string& out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}
// jsonb: version byte 1, then the JSON text.
inline void append_jsonb(std::string& out, std::string_view json) {
  put_u32(out, static_cast<uint32_t>(json.size() + 1));
  out.push_back('\1');
  out.append(json);
}
// timestamptz: microseconds since 2000-01-01 00:00:00 UTC.
inline void append_timestamptz(std::string& out, int64_t pg_us) { append_int8(out, pg_us); }
inline void append_uuid(std::string& out, const uint8_t (&bytes)[16]) {
  put_u32(out, 16);
  out.append(reinterpret_cast<const char*>(bytes), 16);
}

}  // namespace pg_binary

// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC).
inline constexpr int64_t unix_to_pg_epoch_us = 946'684'800'000'000;

enum class parse_status : uint8_t { ok, malformed, out_of_range };

// An ISO 8601 / RFC 3339 date-time as stages::is_iso8601_datetime accepts it
// (no offset: UTC), as microseconds since PostgreSQL's epoch. The fraction is
// rounded to microseconds as PostgreSQL rounds it; second 60 is the next
// minute's 0, as in PostgreSQL. Year 0000 is out of range (there is none).
[[nodiscard]] parse_status parse_timestamp(std::string_view s, int64_t& pg_us) noexcept;

// A UUID in any form PostgreSQL accepts (stages::is_pg_uuid), as 16 bytes.
[[nodiscard]] bool parse_uuid(std::string_view s, uint8_t (&out)[16]) noexcept;

// A value written as text (a topic segment, a default) in the column's
// binary form; false with `problem` set when the text does not fit the type.
[[nodiscard]] parse_status append_from_text(std::string& out, config::column_type type, std::string_view text,
                                            std::string* problem);

}  // namespace evpipe::stages::route
