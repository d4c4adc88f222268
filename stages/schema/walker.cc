#include "stages/schema/walker.h"

#include <re2/re2.h>

#include <algorithm>
#include <array>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <bit>
#include <cmath>
#include <cstring>

#include "stages/schema/simple_pattern.h"
#include "stages/validate.h"

namespace evpipe::stages::schema {

namespace dom = simdjson::dom;

std::string_view keyword_name(keyword k) noexcept {
  switch (k) {
    case keyword::false_schema: return "false";
    case keyword::type: return "type";
    case keyword::required: return "required";
    case keyword::additional_properties: return "additionalProperties";
    case keyword::enum_values: return "enum";
    case keyword::const_value: return "const";
    case keyword::minimum: return "minimum";
    case keyword::maximum: return "maximum";
    case keyword::exclusive_minimum: return "exclusiveMinimum";
    case keyword::exclusive_maximum: return "exclusiveMaximum";
    case keyword::min_length: return "minLength";
    case keyword::max_length: return "maxLength";
    case keyword::pattern: return "pattern";
    case keyword::format: return "format";
    case keyword::min_items: return "minItems";
    case keyword::max_items: return "maxItems";
    case keyword::all_of: return "allOf";
    case keyword::any_of: return "anyOf";
    case keyword::one_of: return "oneOf";
  }
  return "unknown";
}

namespace {

// The JSON Schema type bits of each tape type, by its character
// (stages/schema/tape.h); a double is a number, and an integer too only when
// it has no fractional part, which its value says.
constexpr auto bits_of = [] {
  std::array<uint8_t, 128> b{};
  b['n'] = t_null;
  b['t'] = b['f'] = t_boolean;
  b['l'] = b['u'] = t_integer | t_number;
  b['d'] = t_number;
  b['"'] = t_string;
  b['['] = t_array;
  b['{'] = t_object;
  return b;
}();

bool integral(double d) noexcept { return std::trunc(d) == d; }

// The JSON Schema type bits of a value: an integral number is both.
uint8_t type_of(tape::view t, size_t at) noexcept {
  const char c = tape::type_at(t, at);
  if (c == 'd') return integral(tape::double_at(t, at)) ? uint8_t(t_integer | t_number) : uint8_t(t_number);
  return bits_of[uint8_t(c) & 127];
}

std::string type_names(uint8_t bits) {
  std::string out;
  auto add = [&](uint8_t b, const char* name) {
    if (bits & b) out += (out.empty() ? "" : " or ") + std::string(name);
  };
  add(t_null, "null");
  add(t_boolean, "boolean");
  if (bits & t_number) add(t_number, "number");
  else add(t_integer, "integer");
  add(t_string, "string");
  add(t_array, "array");
  add(t_object, "object");
  return out;
}

std::string type_name(tape::view t, size_t at) {
  uint8_t bits = type_of(t, at);
  return type_names((bits & t_number) ? uint8_t(t_number) : bits);
}

// Short text of a number for messages.
std::string num(double d) {
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "%.17g", d);
  return std::string(buf, n > 0 ? size_t(n) : 0);
}

// Little-endian view of eight bytes: byte i of the text is bits 8i..8i+7.
uint64_t load8(const char* p) noexcept {
  uint64_t w;
  std::memcpy(&w, p, 8);
  if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap64(w);
  return w;
}

// Whether a value of tape type `c` is of one of the JSON Schema types
// `types`. Only a double under "integer" without "number" needs its value.
[[gnu::always_inline]] inline bool has_type(uint8_t types, char c, tape::view t, size_t at) noexcept {
  if (bits_of[uint8_t(c) & 127] & types) return true;
  return c == 'd' && (types & t_integer) && integral(tape::double_at(t, at));
}

uint32_t load4(const char* p) noexcept {
  uint32_t w;
  std::memcpy(&w, p, 4);
  return w;
}

// Byte equality of short strings (member names, enum values) without a call
// to memcmp: two overlapping loads cover 4 to 16 bytes and never read
// outside either string.
[[gnu::always_inline]] inline bool same_bytes(std::string_view a, std::string_view b) noexcept {
  const size_t n = a.size();
  if (n != b.size()) return false;
  const char *x = a.data(), *y = b.data();
  if (n >= 8) {
    if (n > 16) return std::memcmp(x, y, n) == 0;
    return ((load8(x) ^ load8(y)) | (load8(x + n - 8) ^ load8(y + n - 8))) == 0;
  }
  if (n >= 4) return ((load4(x) ^ load4(y)) | (load4(x + n - 4) ^ load4(y + n - 4))) == 0;
  for (size_t i = 0; i < n; ++i) {
    if (x[i] != y[i]) return false;
  }
  return true;
}

// enum: a string can only equal a string, and strings are equal by their
// bytes (simdjson has decoded the escapes), so strings meet only strings.
[[gnu::always_inline]] inline bool in_enum(const node& n, char c, tape::view t, size_t at, tape::view literals) {
  if (c == '"') {
    const std::string_view s = tape::string_at(t, at);
    for (std::string_view e : n.enum_strings) {
      if (same_bytes(s, e)) return true;
    }
    return false;
  }
  for (uint32_t e : n.enum_others_at) {
    if (tape::equal(t, at, literals, e)) return true;
  }
  return false;
}

// Whether the string whose length prefix is at `at` in the tape's string
// buffer is `text`; full() gives the whole text, needed only past 12 bytes.
// Reads the 16 bytes from `at` whatever the string's length: simdjson keeps
// SIMDJSON_PADDING bytes past the strings it writes (tape.h), and the bytes
// past the string are masked out of the verdict.
template <typename Full>
[[gnu::always_inline]] inline bool text_is(const tape_text& text, const uint8_t* at, Full&& full) noexcept {
#if defined(__SSE2__)
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
  const __m128i e = _mm_load_si128(reinterpret_cast<const __m128i*>(text.bytes));
  const uint32_t same = uint32_t(_mm_movemask_epi8(_mm_cmpeq_epi8(x, e))) | text.ignore;
#else
  uint32_t same = text.ignore;
  for (int i = 0; i < 16; ++i) same |= uint32_t(at[i] == text.bytes[i]) << i;
#endif
  if (same == 0x1FFFF) [[likely]] return true;
  // The first 12 bytes of a longer text match: compare the rest.
  return same == 0xFFFF && std::memcmp(at + 16, std::string_view(full()).data() + 12, text.size - 12) == 0;
}

// Whether the string whose length prefix is at `at` is one of the node's
// enum strings.
[[gnu::always_inline]] inline bool enum_has(const node& n, const uint8_t* at) noexcept {
  if (!n.enum_slots.empty()) [[likely]] {
    // The one value it can equal: no loop whose exit depends on which value it is.
    const int8_t i = n.enum_slots[(enum_word(at) * n.enum_mult) >> n.enum_shift];
    return i >= 0 && text_is(n.enum_texts[i], at, [&] { return n.enum_strings[i]; });
  }
  for (size_t i = 0; i < n.enum_texts.size(); ++i) {
    if (text_is(n.enum_texts[i], at, [&] { return n.enum_strings[i]; })) return true;
  }
  return false;
}

[[gnu::always_inline]] inline bool pattern_matches(const node& n, std::string_view s) {
  return n.fast_pattern ? n.fast_pattern->search(s)
                        : n.pattern->Match(re2::StringPiece(s.data(), s.size()), 0, s.size(), RE2::UNANCHORED, nullptr, 0);
}

void append_token(std::string& out, std::string_view key) {
  out.push_back('/');
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out.push_back(c);
  }
}

}  // namespace

void walker::record(const node& n, keyword k, std::string detail) {
  why_->what = k;
  why_->detail = std::move(detail);
  why_->schema_at = n.where;
  why_->pointer.clear();
  for (const auto& s : path_) {
    if (s.key.data()) append_token(why_->pointer, s.key);
    else why_->pointer += "/" + std::to_string(s.index);
  }
}

template <bool Report, typename Detail>
bool walker::fail(const node& n, keyword k, Detail&& detail) {
  if constexpr (Report) record(n, k, detail());
  return false;
}

template <bool Report>
bool walker::walk(uint32_t i, size_t v) {
  const node& n = nodes_[i];
  if (!check_value<Report>(n, v)) return false;
  const uint32_t has = n.has;
  if (!(has & node::h_structure)) return true;
  switch (tape::type_at(t_, v)) {
    case '[':
      if ((has & node::h_array_checks) && !walk_array<Report>(n, v)) return false;
      break;
    case '{':
      if ((has & node::h_object_checks) && !walk_object<Report>(n, v)) return false;
      break;
    default: break;
  }
  // false, const and the applicators: rare in payload schemas, kept out of
  // the common path behind one test.
  return !(has & node::h_rare) || walk_rare<Report>(n, v);
}

// The checks on the value itself (type, enum, string and number keywords):
// all that a leaf of the schema has. Inlined where members and items are
// walked, so that a leaf costs no call.
template <bool Report>
[[gnu::always_inline]] inline bool walker::check_value(const node& n, size_t v) {
  const uint32_t has = n.has;
  if (!(has & node::h_value_checks)) return true;
  const char t = tape::type_at(t_, v);
  if ((has & node::h_type) && !has_type(n.types, t, t_, v)) [[unlikely]] {
    return fail<Report>(n, keyword::type, [&] { return "expected " + type_names(n.types) + ", got " + type_name(t_, v); });
  }
  if ((has & node::h_const) && !tape::equal(t_, v, literals_, n.const_at)) [[unlikely]] {
    return fail<Report>(n, keyword::const_value, [&] { return "not the constant " + simdjson::minify(n.const_value); });
  }
  if ((has & node::h_enum) && !in_enum(n, t, t_, v, literals_)) [[unlikely]] {
    return fail<Report>(n, keyword::enum_values, [] { return std::string("not one of the enum values"); });
  }
  if (t == '"') {
    if (has & node::h_string_checks) return walk_string<Report>(n, tape::string_at(t_, v));
  } else if (has & node::h_number_checks) {
    if (tape::is_number(t)) return walk_number<Report>(n, v);
  }
  return true;
}

// A member or an item: a scalar leaf that passes costs its own checks and
// nothing else; anything a leaf does not accept is walked as a node, which
// finds the failure and reports it.
template <bool Report>
[[gnu::always_inline]] inline size_t walker::check_leaf(const leaf& l, tape::view t, size_t v) {
  const uint64_t w = t.words[v];
  const char c = static_cast<char>(w >> 56);
  // The usual leaves in one step each (program.h, leaf_op); whatever such a
  // step is not sure of is walked as the node below.
  {
    // A string's place in the string buffer: only a string's word holds one.
    auto at = [&] { return t.strings + (w & 0x00FFFFFFFFFFFFFFull); };
    uint32_t size = 0;
    auto sized = [&] {
      std::memcpy(&size, at(), sizeof size);
      return size - l.min_bytes <= l.byte_span;
    };
    auto text = [&] { return std::string_view(reinterpret_cast<const char*>(at() + sizeof size), size); };
    // Whether the leaf allows the value's type: for a string leaf a value
    // that is no string can only be null or a boolean (["string", "null"]):
    // one word, nothing to check.
    auto other = [&] { return ((l.tape_types >> (uint8_t(c) & 63)) & 1) != 0; };
    switch (l.op) {
      case leaf_op::string:
        if (c == '"' ? sized() : other()) [[likely]] return v + 1;
        return walk<Report>(l.node, v) ? tape::after(t, v) : failed;
      case leaf_op::uuid:
        if (c == '"' ? sized() && is_uuid_text(text()) : other()) [[likely]] return v + 1;
        return walk<Report>(l.node, v) ? tape::after(t, v) : failed;
      case leaf_op::date_time:
        if (c == '"' ? sized() && is_rfc3339_date_time(text()) : other()) [[likely]] return v + 1;
        return walk<Report>(l.node, v) ? tape::after(t, v) : failed;
      case leaf_op::enum_values:
        if (c == '"' ? sized() && enum_has(nodes_[l.node], at()) : other()) [[likely]] return v + 1;
        return walk<Report>(l.node, v) ? tape::after(t, v) : failed;
      case leaf_op::pattern:
        if (c == '"' ? sized() && pattern_matches(nodes_[l.node], text()) : other()) [[likely]] return v + 1;
        return walk<Report>(l.node, v) ? tape::after(t, v) : failed;
      case leaf_op::number:
        if (other()) [[likely]] {
          const uint64_t bits = t.words[v + 1];
          double x;
          if (c == 'd') std::memcpy(&x, &bits, sizeof x);
          else x = c == 'l' ? static_cast<double>(static_cast<int64_t>(bits)) : static_cast<double>(bits);
          if (x >= l.low && x <= l.high) [[likely]] return v + 2;
        }
        return walk<Report>(l.node, v) ? tape::after(t, v) : failed;
      case leaf_op::object:
        if (c == '{') [[likely]] return walk_object<Report>(nodes_[l.node], v) ? static_cast<uint32_t>(w) : failed;
        return walk<Report>(l.node, v) ? tape::after(t, v) : failed;
      case leaf_op::array:
        if (c == '[') [[likely]] return walk_array<Report>(nodes_[l.node], v) ? static_cast<uint32_t>(w) : failed;
        return walk<Report>(l.node, v) ? tape::after(t, v) : failed;
      case leaf_op::any: return tape::after(t, v);
      case leaf_op::general: break;
      default: __builtin_unreachable();  // compile.cc sets only the values above: no bounds test
    }
  }
  // leaf_op::general: a scalar leaf of several types (strings and numbers)
  // or with several string checks, else a node.
  if (l.kind == leaf_kind::scalar) {
    if (((l.tape_types >> (uint8_t(c) & 63)) & 1) == 0) return walk<Report>(l.node, v) ? tape::after(t, v) : failed;
    if (c == '"') {
      const uint8_t* at = t.strings + (w & 0x00FFFFFFFFFFFFFFull);
      uint32_t size;
      std::memcpy(&size, at, sizeof size);
      // A length outside the bytes that settle it needs its characters counted.
      const std::string_view s(reinterpret_cast<const char*>(at + sizeof size), size);
      if (size - l.min_bytes <= l.byte_span && (l.strings == string_check::none || several_string_checks(nodes_[l.node], s))) {
        return v + 1;
      }
    } else if (tape::is_number(c)) {
      double x;
      if (c == 'd') std::memcpy(&x, &t.words[v + 1], sizeof x);
      else x = c == 'l' ? static_cast<double>(static_cast<int64_t>(t.words[v + 1])) : static_cast<double>(t.words[v + 1]);
      if (x >= l.low && x <= l.high) return v + 2;
    } else {
      return tape::after(t, v);  // null, a boolean, or an array or object no scalar keyword looks at
    }
    return walk<Report>(l.node, v) ? v + 1 + (c != '"') : failed;
  }
  return walk<Report>(l.node, v) ? tape::after(t, v) : failed;
}

// A scalar leaf's enum (of strings), pattern and format, each it has.
bool walker::several_string_checks(const node& n, std::string_view s) const {
  if ((n.has & node::h_enum) &&
      std::none_of(n.enum_strings.begin(), n.enum_strings.end(), [&](std::string_view e) { return same_bytes(s, e); })) {
    return false;
  }
  if ((n.has & node::h_pattern) && !pattern_matches(n, s)) return false;
  if (n.has & node::h_format) return n.format == format_kind::uuid ? is_uuid_text(s) : is_rfc3339_date_time(s);
  return true;
}

template <bool Report>
bool walker::walk_rare(const node& n, size_t v) {
  const uint32_t has = n.has;
  if (has & node::h_false) return fail<Report>(n, keyword::false_schema, [] { return std::string("no value is allowed here"); });
  if ((has & node::h_ref) && !walk<Report>(n.ref, v)) return false;
  if (has & node::h_all_of) {
    for (uint32_t c : n.all_of) {
      if (!walk<Report>(c, v)) return false;  // the inner failure says more than "allOf"
    }
  }
  if (has & node::h_any_of) {
    bool any = false;
    for (uint32_t c : n.any_of) {
      if ((any = walk<false>(c, v))) break;
    }
    if (!any) {
      return fail<Report>(n, keyword::any_of,
                          [&] { return "matches none of the " + std::to_string(n.any_of.size()) + " schemas"; });
    }
  }
  if (has & node::h_one_of) {
    size_t matched = 0;
    for (uint32_t c : n.one_of) {
      if (walk<false>(c, v) && ++matched > 1) break;
    }
    if (matched != 1) {
      return fail<Report>(n, keyword::one_of, [&] {
        return matched == 0 ? "matches none of the " + std::to_string(n.one_of.size()) + " schemas"
                            : "matches more than one of the " + std::to_string(n.one_of.size()) + " schemas";
      });
    }
  }
  return true;
}

template <bool Report>
[[gnu::always_inline]] inline bool walker::walk_string(const node& n, std::string_view s) {
  // A string has between size/4 (rounded up: a character is at most 4
  // bytes) and size characters: most lengths are settled by the byte count
  // without counting characters.
  const bool settled = (!(n.has & node::h_max_length) || s.size() <= n.max_length) &&
                       (!(n.has & node::h_min_length) || (s.size() + 3) / 4 >= n.min_length);
  if (!settled && (n.has & (node::h_min_length | node::h_max_length))) {
    const size_t chars = utf8_chars(s);  // code points, as 2020-12 counts length
    if ((n.has & node::h_min_length) && chars < n.min_length) {
      return fail<Report>(n, keyword::min_length, [&] {
        return std::to_string(chars) + " characters, fewer than " + std::to_string(n.min_length);
      });
    }
    if ((n.has & node::h_max_length) && chars > n.max_length) {
      return fail<Report>(n, keyword::max_length, [&] {
        return std::to_string(chars) + " characters, more than " + std::to_string(n.max_length);
      });
    }
  }
  if ((n.has & node::h_pattern) && !pattern_matches(n, s)) {
    return fail<Report>(n, keyword::pattern, [&] { return "does not match " + n.pattern->pattern(); });
  }
  if (n.has & node::h_format) {
    const bool ok = n.format == format_kind::uuid ? is_uuid_text(s) : is_rfc3339_date_time(s);
    if (!ok) {
      return fail<Report>(n, keyword::format, [&] {
        return std::string(n.format == format_kind::uuid ? "not a uuid" : "not an RFC 3339 date-time");
      });
    }
  }
  return true;
}

template <bool Report>
[[gnu::always_inline]] inline bool walker::walk_number(const node& n, size_t v) {
  const double x = tape::number_at(t_, v);
  if ((n.has & node::h_minimum) && !(x >= n.minimum)) {
    return fail<Report>(n, keyword::minimum, [&] { return num(x) + " is below the minimum " + num(n.minimum); });
  }
  if ((n.has & node::h_maximum) && !(x <= n.maximum)) {
    return fail<Report>(n, keyword::maximum, [&] { return num(x) + " is above the maximum " + num(n.maximum); });
  }
  if ((n.has & node::h_exclusive_minimum) && !(x > n.exclusive_minimum)) {
    return fail<Report>(n, keyword::exclusive_minimum, [&] { return num(x) + " is not above " + num(n.exclusive_minimum); });
  }
  if ((n.has & node::h_exclusive_maximum) && !(x < n.exclusive_maximum)) {
    return fail<Report>(n, keyword::exclusive_maximum, [&] { return num(x) + " is not below " + num(n.exclusive_maximum); });
  }
  return true;
}

template <bool Report>
bool walker::walk_array(const node& n, size_t a) {
  const size_t size = tape::count(t_, a);
  if ((n.has & node::h_min_items) && size < n.min_items) {
    return fail<Report>(n, keyword::min_items,
                        [&] { return std::to_string(size) + " items, fewer than " + std::to_string(n.min_items); });
  }
  if ((n.has & node::h_max_items) && size > n.max_items) {
    return fail<Report>(n, keyword::max_items,
                        [&] { return std::to_string(size) + " items, more than " + std::to_string(n.max_items); });
  }
  if (n.has & node::h_items) {
    const leaf& items = nodes_[n.items].as_leaf;
    const tape::view t = t_;
    size_t i = 0;
    size_t e = a + 1;
    const size_t end = tape::scope_end(t, a) - 1;
    if constexpr (!Report) {
      // Items that are strings with at most a length (a list of tags): the
      // type and the byte count of each, with no step through the leaf's
      // switch; the first item they do not settle goes to the loop below.
      if (items.op == leaf_op::string) {
        for (; e < end; ++e) {
          const uint64_t w = t.words[e];
          if (static_cast<char>(w >> 56) != '"') break;
          uint32_t size;
          std::memcpy(&size, t.strings + (w & 0x00FFFFFFFFFFFFFFull), sizeof size);
          if (size - items.min_bytes > items.byte_span) break;
        }
      }
    }
    // `failed` is past every end: a failure ends the loop without a test of its own.
    while (e < end) {
      if constexpr (Report) path_.push_back(step{{}, i++});
      e = check_leaf<Report>(items, t, e);
      if constexpr (Report) {
        if (e == failed) return false;  // the path stays for the message; check() clears it
        path_.pop_back();
      }
    }
    if (e == failed) return false;
  }
  return true;
}

// The property named by the string whose length prefix is at `at`, by
// node::property_slots, or null.
[[gnu::noinline]] const member_leaf* walker::find_member(const node& n, const uint8_t* at) noexcept {
  if (n.properties.empty()) return nullptr;
  uint32_t size;
  std::memcpy(&size, at, sizeof size);
  const size_t mask = n.property_slots.size() - 1;
  const std::string_view key(reinterpret_cast<const char*>(at + sizeof size), size);
  for (size_t slot = property_hash(key) & mask; n.property_slots[slot] != 0; slot = (slot + 1) & mask) {
    const member_leaf& candidate = n.members[n.property_slots[slot] - 1];
    if (text_is(candidate.name, at, [&]() -> const std::string& { return n.properties[candidate.index].name; })) {
      return &candidate;
    }
  }
  return nullptr;
}

template <bool Report>
bool walker::walk_object(const node& n, size_t o) {
  uint64_t seen = 0;
  if (n.has & (node::h_properties | node::h_additional)) {
    const tape::view t = t_;
    const member_leaf* members = n.members.data();
    // Members usually come in the order the schema lists them: try the
    // property after the last one found before hashing the name. The
    // table's last entry matches no name, so `expect` needs no bound.
    const member_leaf* expect = members;
    // A member is its key's word, then its value at k + 1. `failed` is past
    // every end: a failure ends the loop without a test of its own.
    size_t k = o + 1;
    for (const size_t end = tape::scope_end(t, o) - 1; k < end;) {
      const uint8_t* at = t.strings + (t.words[k] & 0x00FFFFFFFFFFFFFFull);
      auto named = [&](const member_leaf& m) {
        return text_is(m.name, at, [&]() -> const std::string& { return n.properties[m.index].name; });
      };
      // Out of order or unknown: the hash, out of line, so that the loop
      // keeps its registers for the usual member.
      const member_leaf* m = named(*expect) ? expect : find_member(n, at);
      const leaf* check;
      if (m) {
        seen |= m->seen_bit;
        check = &m->check;
        expect = m + 1;
      } else if (n.has & node::h_additional) {
        if (n.additional == no_node) {
          if constexpr (Report) path_.push_back(step{tape::string_at(t, k), 0});
          return fail<Report>(n, keyword::additional_properties,
                              [&] { return "property \"" + std::string(tape::string_at(t, k)) + "\" is not allowed"; });
        }
        check = &nodes_[n.additional].as_leaf;
      } else {
        k = tape::after(t, k + 1);
        continue;
      }
      if constexpr (Report) path_.push_back(step{tape::string_at(t, k), 0});
      k = check_leaf<Report>(*check, t, k + 1);
      if constexpr (Report) {
        if (k == failed) return false;
        path_.pop_back();
      }
    }
    if (k == failed) return false;
  }
  if ((n.required_props & seen) != n.required_props || !n.required_other.empty()) {
    for (const auto& name : n.required) {
      if (tape::member(t_, o, name) == 0) {
        return fail<Report>(n, keyword::required, [&] { return "property \"" + name + "\" is missing"; });
      }
    }
  }
  return true;
}

bool walker::check(const program& p, const dom::document& doc, size_t at, violation* why) {
  p_ = &p;
  why_ = why;
  path_.clear();
  nodes_ = p.nodes.data();
  t_ = tape::of(doc);
  literals_ = p.literals ? tape::of(p.literals->doc) : tape::view{};
  // Two instantiations of the walk: the one for the verdict alone keeps no
  // path and builds no message, so a passing value costs only its checks.
  // The usual payload schema is an object's: its walk at once.
  if (why) return walk<true>(0, at);
  if (nodes_[0].as_leaf.kind == leaf_kind::object && tape::type_at(t_, at) == '{') return walk_object<false>(nodes_[0], at);
  return walk<false>(0, at);
}

}  // namespace evpipe::stages::schema
