#pragma once
// Numbers beyond what simdjson's DOM parser holds: integers past 64 bits
// (a 128-bit serial number) and numbers past a double's range (1e400).
// JSON allows them and PostgreSQL's jsonb stores them, but the parser refuses
// the whole document for one of them. Where only some fields are read (a
// route with envelope "none", the split of an HTTP array body), the document
// is parsed from a marked copy instead: each such number written as the
// string "\u0000<number>". jsonb cannot store U+0000, so no string of a
// storable message looks like a marker; a text holding \u0000 or a NUL byte
// is never marked. Pure functions.

#include <string>
#include <string_view>

namespace evpipe::stages {

// Writes `json` to `out` with every number beyond int64/uint64 (integers) or
// a double (others) as a marker string; true when it marked at least one.
// Not marked, so the parse still refuses them: malformed numbers, a number
// where an object key belongs, and one PostgreSQL's numeric cannot hold
// (131,072 digits or more before the point, more than 16,383 after it).
// Numbers too small for a double (1e-400) are left alone (the parser reads
// them as 0). False, with `out` untouched, when `json` holds a \u0000 escape
// or a NUL byte, unless `structure_only` (the marked text is only checked for
// its structure; its strings are never read).
bool mark_big_numbers(std::string_view json, std::string& out, bool structure_only = false);

// The number a marker stands for, when the parsed string `s` is one.
[[nodiscard]] inline bool big_number_of(std::string_view s, std::string_view& number) noexcept {
  if (s.size() < 2 || s[0] != '\0') return false;
  number = s.substr(1);
  return true;
}

// Whether `number` (a JSON number) is written as an integer (no fraction, no
// exponent).
[[nodiscard]] bool is_integer_literal(std::string_view number) noexcept;

// Replaces each marker in `json` (text written by a JSON serializer from a
// marked document: "\u0000<number>") with its number, in place.
void unmark_big_numbers(std::string& json);

}  // namespace evpipe::stages
