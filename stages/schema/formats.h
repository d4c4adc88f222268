#pragma once
// The formats `format` asserts (docs/schemas.md), read many bytes at a time:
// the walker calls them for every value of such a field.
// Stateless; safe on any thread.

#include <string_view>

namespace evpipe::stages::schema {

// RFC 4122 text form: 8-4-4-4-12 hex digits, either case.
[[nodiscard]] bool is_uuid_text(std::string_view s) noexcept;
// RFC 3339 section 5.6 date-time: full-date "T" full-time, seconds and an
// offset required, real calendar days (leap years), second 60 allowed.
[[nodiscard]] bool is_rfc3339_date_time(std::string_view s) noexcept;

}  // namespace evpipe::stages::schema
