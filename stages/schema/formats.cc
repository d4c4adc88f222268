#include "stages/schema/formats.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <bit>
#include <cstdint>
#include <cstring>

namespace evpipe::stages::schema {

namespace {

using format_detail::byte_at;
using format_detail::each_byte;
using format_detail::load8;

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
    // Branch-free: every test made, the results combined bitwise.
    if ((unsigned{ok16 == 0xFFFF} & unsigned{p[16] == ':'} & unsigned{d(17) <= 9} & unsigned{d(18) <= 9}) == 0) {
      return false;
    }
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
