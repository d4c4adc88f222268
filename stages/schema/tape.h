#pragma once
// Reading a parsed document straight from simdjson's tape, for the payload
// walker (stages/schema/walker.cc). Through dom::element every string read
// and every step to the next member is an out-of-line call that checks the
// type again; here a value is a tape index and the walker, which already
// knows the type, reads the word it needs.
//
// Relies on simdjson 3.0.1 (Debian 12's libsimdjson-dev), whose
// dom::document keeps `tape` and `string_buf` as public members, in the
// layout simdjson documents in doc/tape.md:
//  - a word holds the type character in its top 8 bits and a 56-bit payload;
//  - index 0 is the root word 'r'; the document's value starts at index 1;
//  - '{' and '[': the low 32 bits are the index one past the matching '}' or
//    ']', bits 32-55 the number of members or items, saturated at 0xFFFFFF;
//  - '}' and ']': the low 32 bits are the index of the matching '{' or '[';
//  - '"': the payload is an offset into string_buf, where the length (4
//    bytes, little-endian) precedes the bytes; document::allocate sizes
//    string_buf SIMDJSON_PADDING (64) bytes past the most a document can
//    write there, so 16 bytes read from any string's length stay inside it
//    (walker.cc compares names and enum strings that way, masking out the
//    bytes past the string);
//  - 'l', 'u', 'd': the value (int64, uint64, double) is the next word;
//  - 't', 'f', 'n': one word.
// An object is its '{' word, then key and value per member, then '}'.
// tests/stages/schema/tape_test.cc walks documents holding every JSON type
// this way and compares each value with what the DOM API says, so a simdjson
// that lays the tape out differently fails there before anything else.
//
// Stateless and read-only: safe on any thread that may read the document.

#include <simdjson.h>

#include <cstdint>
#include <cstring>
#include <string_view>

namespace evpipe::stages::schema::tape {

static_assert(simdjson::SIMDJSON_VERSION_MAJOR == 3, "stages/schema/tape.h reads simdjson 3.x's tape layout (doc/tape.md)");

// A document's tape and strings.
struct view {
  const uint64_t* words = nullptr;
  const uint8_t* strings = nullptr;
};

[[nodiscard]] inline view of(const simdjson::dom::document& d) noexcept { return {d.tape.get(), d.string_buf.get()}; }

// The index of a document's value (after the root word).
inline constexpr size_t root = 1;

[[nodiscard]] inline char type_at(view t, size_t i) noexcept { return static_cast<char>(t.words[i] >> 56); }

// The text of a string value or key at `i`.
[[nodiscard]] inline std::string_view string_at(view t, size_t i) noexcept {
  const uint8_t* s = t.strings + (t.words[i] & 0x00FFFFFFFFFFFFFFull);
  uint32_t n;
  std::memcpy(&n, s, sizeof n);
  return {reinterpret_cast<const char*>(s + sizeof n), n};
}

// For '{' and '[': the index one past the closing word.
[[nodiscard]] inline size_t scope_end(view t, size_t i) noexcept { return static_cast<uint32_t>(t.words[i]); }

// For '}' and ']': the index of the matching '{' or '['.
[[nodiscard]] inline size_t scope_start(view t, size_t i) noexcept { return static_cast<uint32_t>(t.words[i]); }

// The index of the value after the one at `i` (its sibling, or the closing
// word of its parent).
[[nodiscard]] inline size_t after(view t, size_t i) noexcept {
  switch (type_at(t, i)) {
    case '{':
    case '[': return scope_end(t, i);
    case 'l':
    case 'u':
    case 'd': return i + 2;
    default: return i + 1;
  }
}

// Members of the object or items of the array at `i`; counted one by one
// only past the tape's saturated count.
[[nodiscard]] inline size_t count(view t, size_t i) noexcept {
  const size_t n = static_cast<size_t>((t.words[i] >> 32) & 0xFFFFFF);
  if (n < 0xFFFFFF) return n;
  size_t c = 0;
  const bool object = type_at(t, i) == '{';
  for (size_t k = i + 1, end = scope_end(t, i) - 1; k < end; ++c) k = after(t, object ? k + 1 : k);
  return c;
}

[[nodiscard]] inline int64_t int64_at(view t, size_t i) noexcept {
  int64_t v;
  std::memcpy(&v, &t.words[i + 1], sizeof v);
  return v;
}
[[nodiscard]] inline uint64_t uint64_at(view t, size_t i) noexcept { return t.words[i + 1]; }
[[nodiscard]] inline double double_at(view t, size_t i) noexcept {
  double v;
  std::memcpy(&v, &t.words[i + 1], sizeof v);
  return v;
}

// A set of tape types as one 64-bit mask: bit (type & 63) of each type
// character, which are distinct for the nine types a value can have.
[[nodiscard]] constexpr uint64_t type_bit(char type) noexcept { return uint64_t{1} << (static_cast<uint8_t>(type) & 63); }
static_assert([] {
  uint64_t all = 0;
  for (char c : {'"', 'n', 't', 'f', 'l', 'u', 'd', '[', '{'}) {
    if (all & type_bit(c)) return false;
    all |= type_bit(c);
  }
  return true;
}());

[[nodiscard]] inline bool is_number(char type) noexcept { return type == 'l' || type == 'u' || type == 'd'; }

// A number's value as a double (what the schema's bounds are compared with).
[[nodiscard]] inline double number_at(view t, size_t i) noexcept {
  switch (type_at(t, i)) {
    case 'l': return static_cast<double>(int64_at(t, i));
    case 'u': return static_cast<double>(uint64_at(t, i));
    default: return double_at(t, i);
  }
}

// The index of the first member named `key` of the object at `i` (its
// value), or 0 when there is none (index 0 is the root word, never a value).
[[nodiscard]] inline size_t member(view t, size_t i, std::string_view key) noexcept {
  for (size_t k = i + 1, end = scope_end(t, i) - 1; k < end; k = after(t, k + 1)) {
    if (string_at(t, k) == key) return k + 1;
  }
  return 0;
}

// The index of the value of the object at `i`'s last member when that
// member is named `key` and its value is an object, else 0: found from the
// object's closing word in a few reads, however many members come before.
// (Only a container can be found from its end: the word before a closing
// word may be the second word of a number, whose bits say nothing.)
[[nodiscard]] inline size_t last_member_object(view t, size_t i, std::string_view key) noexcept {
  const size_t close = scope_end(t, i) - 1;  // the object's '}'
  const size_t last = close - 1;             // the last word of its last value, if it has members
  if (last <= i || type_at(t, last) != '}') return 0;
  const size_t value = scope_start(t, last);
  // The '}' must close an object that ends right there: a number's second
  // word can hold any bits, including '}' in its top byte.
  if (value <= i + 1 || value >= last || type_at(t, value) != '{' || scope_end(t, value) != close) return 0;
  return string_at(t, value - 1) == key ? value : 0;
}

// JSON equality as enum and const mean it: numbers by value (1 == 1.0),
// objects regardless of member order. The two values may be on different
// tapes.
[[nodiscard]] bool equal(view a, size_t ai, view b, size_t bi) noexcept;

}  // namespace evpipe::stages::schema::tape
