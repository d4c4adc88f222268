#pragma once
// The formats `format` asserts (docs/schemas.md), read many bytes at a time:
// the walker calls them for every value of such a field. The uuid check is
// inline: the walker's leaf for a uuid field is that check and nothing else.
// Stateless; safe on any thread.

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace evpipe::stages::schema {

namespace format_detail {

// Little-endian view of eight bytes: byte i of the text is bits 8i..8i+7.
[[nodiscard]] inline uint64_t load8(const char* p) noexcept {
  uint64_t w;
  std::memcpy(&w, p, 8);
  if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap64(w);
  return w;
}

constexpr uint64_t byte_at(int i) noexcept { return uint64_t{1} << (8 * i); }
constexpr uint64_t each_byte(uint8_t b) noexcept { return 0x0101010101010101ull * b; }

// Whether all eight bytes of `w` are ASCII hex digits, with no branch per
// byte: the range tests are done on all bytes at once. Each byte is below
// 0x80 (checked first), so adding at most 0x80 to it never carries into the
// next byte, and bit 7 of each byte of the sum says where it stands.
[[maybe_unused]] inline bool all_hex(uint64_t w) noexcept {
  constexpr uint64_t high = each_byte(0x80);
  auto at_least = [](uint64_t x, uint8_t lo) { return (x + each_byte(0x80 - lo)) & high; };
  auto at_most = [](uint64_t x, uint8_t hi) { return ~(x + each_byte(0x7F - hi)) & high; };
  const uint64_t lower = w | each_byte(0x20);  // 'A'..'F' -> 'a'..'f'; never makes a digit of a non-digit
  const uint64_t digit = at_least(w, '0') & at_most(w, '9');
  const uint64_t letter = at_least(lower, 'a') & at_most(lower, 'f');
  return (w & high) == 0 && (digit | letter) == high;
}

}  // namespace format_detail

// RFC 4122 text form: 8-4-4-4-12 hex digits, either case.
[[nodiscard, gnu::always_inline]] inline bool is_uuid_text(std::string_view s) noexcept {
  // This runs for every uuid field: 16 bytes at a time where SSE2 is there
  // (every x86-64), else 8 at a time. The four hyphens are checked one by
  // one; in the wide checks they stand in as hex digits.
  if (s.size() != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') return false;
  const char* p = s.data();
#if defined(__SSE2__)
  auto hex16 = [](const char* at, int hyphens) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
    // (x - lo) saturated below hi - lo is zero exactly for lo <= x <= hi.
    auto within = [&](__m128i v, char lo, char span) {
      return _mm_cmpeq_epi8(_mm_subs_epu8(_mm_sub_epi8(v, _mm_set1_epi8(lo)), _mm_set1_epi8(span)), _mm_setzero_si128());
    };
    const __m128i ok = _mm_or_si128(within(x, '0', 9), within(_mm_or_si128(x, _mm_set1_epi8(0x20)), 'a', 5));
    return (_mm_movemask_epi8(ok) | hyphens) == 0xFFFF;
  };
  // Bytes 0-15 (hyphens at 8, 13), 16-31 (18, 23), 20-35 (23).
  // Branch-free: all three tested, the results combined bitwise.
  return (unsigned{hex16(p, (1 << 8) | (1 << 13))} & unsigned{hex16(p + 16, (1 << 2) | (1 << 7))} &
          unsigned{hex16(p + 20, 1 << 3)}) != 0;
#else
  using namespace format_detail;
  // '-' + 3 = '0': add 3 at the hyphens of each word so that they read as 0.
  constexpr uint64_t at8 = byte_at(0), at13 = byte_at(5), at18 = byte_at(2), at23 = byte_at(7);
  return all_hex(load8(p)) & all_hex(load8(p + 8) + 3 * (at8 | at13)) & all_hex(load8(p + 16) + 3 * (at18 | at23)) &
         all_hex(load8(p + 24)) & all_hex(load8(p + 28));
#endif
}

// RFC 3339 section 5.6 date-time: full-date "T" full-time, seconds and an
// offset required, real calendar days (leap years), second 60 allowed.
[[nodiscard]] bool is_rfc3339_date_time(std::string_view s) noexcept;

}  // namespace evpipe::stages::schema
