#include "stages/schema/formats.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <bit>
#include <cstdint>
#include <cstring>

namespace evpipe::stages::schema {

namespace {

// Little-endian view of eight bytes: byte i of the text is bits 8i..8i+7.
uint64_t load8(const char* p) noexcept {
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
[[maybe_unused]] bool all_hex(uint64_t w) noexcept {
  constexpr uint64_t high = each_byte(0x80);
  auto at_least = [](uint64_t x, uint8_t lo) { return (x + each_byte(0x80 - lo)) & high; };
  auto at_most = [](uint64_t x, uint8_t hi) { return ~(x + each_byte(0x7F - hi)) & high; };
  const uint64_t lower = w | each_byte(0x20);  // 'A'..'F' -> 'a'..'f'; never makes a digit of a non-digit
  const uint64_t digit = at_least(w, '0') & at_most(w, '9');
  const uint64_t letter = at_least(lower, 'a') & at_most(lower, 'f');
  return (w & high) == 0 && (digit | letter) == high;
}

// Bit 7 of each byte of `w` set where that byte is not an ASCII digit, the
// others clear. The range tests run on the low 7 bits of every byte at once
// (no carry between bytes: 0x7F + 0x50 < 0x100); a byte with bit 7 set is
// no digit whatever its low bits.
uint64_t non_digits(uint64_t w) noexcept {
  constexpr uint64_t high = each_byte(0x80);
  const uint64_t low7 = w & ~high;
  const uint64_t at_least_0 = low7 + each_byte(0x80 - '0');
  const uint64_t above_9 = low7 + each_byte(0x7F - '9');
  return ~(at_least_0 & ~above_9 & ~w) & high;
}

}  // namespace

bool is_uuid_text(std::string_view s) noexcept {
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
  return hex16(p, (1 << 8) | (1 << 13)) & hex16(p + 16, (1 << 2) | (1 << 7)) & hex16(p + 20, 1 << 3);
#else
  // '-' + 3 = '0': add 3 at the hyphens of each word so that they read as 0.
  constexpr uint64_t at8 = byte_at(0), at13 = byte_at(5), at18 = byte_at(2), at23 = byte_at(7);
  return all_hex(load8(p)) & all_hex(load8(p + 8) + 3 * (at8 | at13)) & all_hex(load8(p + 16) + 3 * (at18 | at23)) &
         all_hex(load8(p + 24)) & all_hex(load8(p + 28));
#endif
}

bool is_rfc3339_date_time(std::string_view s) noexcept {
  // Fixed places for the first 19 characters ("YYYY-MM-DDTHH:MM:SS"), read
  // without a bounds check each once the length is known; a byte that is
  // not a digit gives a value above 9.
  if (s.size() < 20) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  auto d = [p](size_t i) { return unsigned(p[i]) - unsigned('0'); };
#if defined(__SSE2__)
  // "YYYY-MM-DDTHH:MM" (bytes 0-15) in one 16-byte compare: the digits by
  // range, the separators by value ('T' lowered to 't' first).
  {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i digit = _mm_cmpeq_epi8(_mm_subs_epu8(_mm_sub_epi8(x, _mm_set1_epi8('0')), _mm_set1_epi8(9)),
                                         _mm_setzero_si128());
    const __m128i lowered = _mm_or_si128(x, _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0));
    const __m128i sep =
        _mm_cmpeq_epi8(lowered, _mm_setr_epi8(0, 0, 0, 0, '-', 0, 0, '-', 0, 0, 't', 0, 0, ':', 0, 0));
    constexpr int sep_at = (1 << 4) | (1 << 7) | (1 << 10) | (1 << 13);
    const int ok16 = (_mm_movemask_epi8(digit) & ~sep_at) | (_mm_movemask_epi8(sep) & sep_at);
    if (((ok16 == 0xFFFF) & (p[16] == ':') & (d(17) <= 9) & (d(18) <= 9)) == 0) return false;
  }
#else
  const bool all_digits = (d(0) <= 9) & (d(1) <= 9) & (d(2) <= 9) & (d(3) <= 9) & (d(5) <= 9) & (d(6) <= 9) &
                          (d(8) <= 9) & (d(9) <= 9) & (d(11) <= 9) & (d(12) <= 9) & (d(14) <= 9) & (d(15) <= 9) &
                          (d(17) <= 9) & (d(18) <= 9);
  const bool separators = (p[4] == '-') & (p[7] == '-') & ((p[10] | 0x20) == 't') & (p[13] == ':') & (p[16] == ':');
  if (!(all_digits & separators)) return false;
#endif
  const unsigned year = d(0) * 1000 + d(1) * 100 + d(2) * 10 + d(3), month = d(5) * 10 + d(6), day = d(8) * 10 + d(9),
                 hour = d(11) * 10 + d(12), minute = d(14) * 10 + d(15), second = d(17) * 10 + d(18);
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 60) return false;
  static constexpr unsigned char days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (day > days[month - 1]) {
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (!(month == 2 && leap && day == 29)) return false;
  }
  size_t i = 19;
  const size_t n = s.size();
  if (p[i] == '.') {
    // The fraction's digits, 8 bytes at a time while 8 are left.
    const size_t start = ++i;
    uint64_t others = 0;
    while (i + 8 <= n && (others = non_digits(load8(s.data() + i))) == 0) i += 8;
    if (others != 0) {
      i += static_cast<size_t>(std::countr_zero(others)) / 8;
    } else {
      while (i < n && d(i) <= 9) ++i;
    }
    if (i == start) return false;
  }
  if (i >= n) return false;  // the offset is required
  if ((p[i] | 0x20) == 'z') return i + 1 == n;
  if ((p[i] != '+' && p[i] != '-') || i + 6 != n) return false;
  // "+HH:MM" is the last 6 of the 8 bytes that end the text (n >= 20): its
  // digits at bytes 3, 4, 6, 7 of that word, ':' at byte 5.
  const uint64_t tail = load8(s.data() + n - 8);
  if ((non_digits(tail) & (byte_at(3) | byte_at(4) | byte_at(6) | byte_at(7)) * 0x80) != 0 || p[n - 3] != ':') return false;
  return d(n - 5) * 10 + d(n - 4) <= 23 && d(n - 2) * 10 + d(n - 1) <= 59;
}

}  // namespace evpipe::stages::schema
