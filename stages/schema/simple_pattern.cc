#include "stages/schema/simple_pattern.h"

#include <bitset>
#include <cctype>
#include <cstring>
#include <vector>

namespace evpipe::stages::schema {

namespace {

using byte_set = std::bitset<128>;

bool punctuation(char c) { return c > ' ' && c < 0x7F && !std::isalnum(static_cast<unsigned char>(c)); }

// A literal outside a class: anything printable that is not an operator.
bool plain_literal(char c) {
  return (c >= ' ' && c < 0x7F) && !std::strchr(".[]()*+?{}|^$\\", c);
}

// A \x escape RE2 reads the same way, as one byte set.
bool escape(char c, byte_set& out) {
  if (c == 'd') {
    for (char d = '0'; d <= '9'; ++d) out.set(d);
    return true;
  }
  if (c == 'w') {
    for (int b = 0; b < 128; ++b) {
      if (std::isalnum(b) || b == '_') out.set(b);
    }
    return true;
  }
  if (punctuation(c)) {  // \. \- \/ ...: the character itself
    out.set(static_cast<unsigned char>(c));
    return true;
  }
  return false;  // \s, \b, \pN, \x41, octal...: RE2's business
}

// "[...]" at s[i] (just after '['): ranges, literals, escapes; no negation.
bool parse_class(std::string_view s, size_t& i, byte_set& out) {
  if (i < s.size() && (s[i] == '^' || s[i] == ']')) return false;
  bool any = false;
  while (i < s.size() && s[i] != ']') {
    byte_set one;
    char lo = 0;
    if (s[i] == '\\') {
      if (i + 1 >= s.size() || !escape(s[i + 1], one)) return false;
      i += 2;
      if (one.count() != 1) {  // \d or \w: no range from it
        out |= one;
        any = true;
        continue;
      }
      lo = static_cast<char>(s[i - 1]);
    } else {
      if (s[i] == '[' || !(s[i] >= ' ' && s[i] < 0x7F)) return false;
      lo = s[i++];
    }
    if (i + 1 < s.size() && s[i] == '-' && s[i + 1] != ']') {
      const char hi = s[i + 1];
      if (hi == '\\' || hi == '[' || !(hi >= ' ' && hi < 0x7F) || hi < lo) return false;
      for (int b = lo; b <= hi; ++b) out.set(b);
      i += 2;
    } else {
      out.set(static_cast<unsigned char>(lo));
    }
    any = true;
  }
  if (i >= s.size() || !any) return false;
  ++i;  // ']'
  return true;
}

bool parse_count(std::string_view s, size_t& i, unsigned& out) {
  size_t start = i;
  out = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    out = out * 10 + unsigned(s[i++] - '0');
    if (out > 64) return false;
  }
  return i > start;
}

}  // namespace

std::optional<simple_pattern> simple_pattern::compile(std::string_view p) {
  simple_pattern out;
  size_t i = 0;
  if (i < p.size() && p[i] == '^') out.anchored_start_ = true, ++i;
  struct position {
    byte_set bytes;
    bool optional = false, repeat = false;
  };
  std::vector<position> positions;
  while (i < p.size()) {
    if (p[i] == '$') {
      if (i + 1 != p.size()) return std::nullopt;
      out.anchored_end_ = true;
      ++i;
      break;
    }
    byte_set atom;
    if (p[i] == '[') {
      ++i;
      if (!parse_class(p, i, atom)) return std::nullopt;
    } else if (p[i] == '\\') {
      if (i + 1 >= p.size() || !escape(p[i + 1], atom)) return std::nullopt;
      i += 2;
    } else if (plain_literal(p[i])) {
      atom.set(static_cast<unsigned char>(p[i++]));
    } else {
      return std::nullopt;
    }
    unsigned min = 1, max = 1;  // max 0: unbounded
    if (i < p.size()) {
      if (p[i] == '?') min = 0, max = 1, ++i;
      else if (p[i] == '*') min = 0, max = 0, ++i;
      else if (p[i] == '+') min = 1, max = 0, ++i;
      else if (p[i] == '{') {
        ++i;
        if (!parse_count(p, i, min)) return std::nullopt;
        max = min;
        if (max == 0 && i < p.size() && p[i] == '}') return std::nullopt;  // {0}: matches nothing; RE2's
        if (i < p.size() && p[i] == ',') {
          ++i;
          max = 0;
          if (i < p.size() && p[i] != '}' && (!parse_count(p, i, max) || max < min || max == 0)) return std::nullopt;
        }
        if (i >= p.size() || p[i] != '}') return std::nullopt;
        ++i;
      }
      if (i < p.size() && (p[i] == '?' || p[i] == '*' || p[i] == '+' || p[i] == '{')) return std::nullopt;  // lazy or stacked
    }
    // Expanded: min required copies, then (max - min) optional ones, or one
    // repeating copy when unbounded (optional too when min is 0).
    for (unsigned k = 0; k < min; ++k) positions.push_back({atom, false, max == 0 && k + 1 == min});
    if (max == 0 && min == 0) positions.push_back({atom, true, true});
    for (unsigned k = min; max != 0 && k < max; ++k) positions.push_back({atom, true, false});
    if (positions.size() > 63) return std::nullopt;
  }
  out.positions_ = static_cast<unsigned>(positions.size());
  unsigned run = 0;
  for (unsigned k = 0; k < positions.size(); ++k) {
    const auto& pos = positions[k];
    for (int b = 0; b < 128; ++b) {
      if (pos.bytes.test(b)) out.class_of_[b] |= uint64_t{1} << k;
    }
    if (pos.repeat) out.repeat_ |= uint64_t{1} << k;
    run = pos.optional ? run + 1 : 0;
    if (pos.optional) out.optional_ |= uint64_t{1} << k;
    if (run > out.optional_run_) out.optional_run_ = run;
  }
  return out;
}

}  // namespace evpipe::stages::schema
