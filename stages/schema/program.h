#pragma once
// A compiled payload schema: the JSON Schema of one file turned into a flat
// table of nodes that stages/schema/walker.cc checks a parsed payload against.
// compile.cc builds it (JSON Schema -> program); walker.cc reads it. The two
// meet only here, so the walker never looks at JSON Schema text.
//
// Immutable once compiled and shared between threads (schema_set holds it by
// shared_ptr; a reload builds new programs, never edits one).

#include <simdjson.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace re2 {
class RE2;
}

namespace evpipe::stages::schema {

class simple_pattern;

// The keywords a node can fail on; their names are what the DLQ message says.
enum class keyword : uint8_t {
  false_schema,  // the schema `false`: nothing is valid
  type,
  required,
  additional_properties,
  enum_values,
  const_value,
  minimum,
  maximum,
  exclusive_minimum,
  exclusive_maximum,
  min_length,
  max_length,
  pattern,
  format,
  min_items,
  max_items,
  all_of,
  any_of,
  one_of,
};
[[nodiscard]] std::string_view keyword_name(keyword k) noexcept;

// JSON Schema types as bits. A number with no fractional part is an integer
// too (2020-12 section 6.1.1), so the walker sets both for 1 and 1.0.
enum type_bit : uint8_t {
  t_null = 1,
  t_boolean = 2,
  t_integer = 4,
  t_number = 8,
  t_string = 16,
  t_array = 32,
  t_object = 64,
};

enum class format_kind : uint8_t { none, uuid, date_time };

inline constexpr uint32_t no_node = UINT32_MAX;

// A member name or an enum string as the walker compares it with a string
// on simdjson's tape: the first 16 bytes the tape's string buffer holds for
// it (its 4-byte length, then up to 12 bytes of text; tape.h), so that one
// 16-byte compare settles the length and, for up to 12 bytes, the text.
// Longer text compares its bytes past the 12th after that.
struct tape_text {
  alignas(16) uint8_t bytes[16] = {0xFF, 0xFF, 0xFF, 0xFF};
  // Bit i set: byte i does not matter (it is past the text). Bit 16 set:
  // the 16 bytes hold the whole text. The default matches no string (no
  // string is 2^32 - 1 bytes long): the end of a table.
  uint32_t ignore = 0x1FFF0;
  uint32_t size = UINT32_MAX;

  [[nodiscard]] static tape_text of(std::string_view s) noexcept {
    tape_text t;
    t.size = static_cast<uint32_t>(s.size());
    std::memcpy(t.bytes, &t.size, 4);  // as simdjson writes it: native byte order
    const size_t head = s.size() < 12 ? s.size() : 12;
    std::memset(t.bytes + 4, 0, 12);
    std::memcpy(t.bytes + 4, s.data(), head);
    t.ignore = (0xFFFFu << (4 + head)) & 0xFFFFu;
    if (s.size() <= 12) t.ignore |= 0x10000u;
    return t;
  }
};

// The first 8 bytes of a string as simdjson's string buffer holds it (its
// 4-byte length, then up to 4 bytes of text, the bytes past a shorter text
// cleared): what an enum's perfect hash reads (node::enum_slots).
// Little-endian only; elsewhere enum_slots stays empty.
[[nodiscard]] inline uint64_t enum_word(const uint8_t* at) noexcept {
  uint64_t w;
  std::memcpy(&w, at, 8);
  uint32_t size;
  std::memcpy(&size, at, 4);
  const unsigned shown = size < 4 ? size : 4;
  return w & (~uint64_t{0} >> (8 * (4 - shown)));
}

// A subschema as the walker meets it in the place of a member or an item,
// precomputed so that the usual leaf (a string with bounds, a number in a
// range, a uuid, an enum of strings) is checked from this struct alone,
// with no test for each keyword it does not have. A leaf only ever accepts:
// whatever it is not sure of (a wrong type, a length its byte count does not
// settle, a number outside its bounds, a failed enum, pattern or format)
// goes to the node's full check, which gives the verdict and the message.
// So a leaf can only be wrong by accepting what the node refuses; the tests
// compare the two (walker_fast_paths_test, schema_differential_test).
enum class leaf_kind : uint8_t {
  scalar,  // type, enum of strings, string and number keywords, from the leaf alone
  any,     // no keyword looks at the value: everything passes
  object,  // "type": "object" and object keywords only: walk_object at once
  array,   // "type": "array" and array keywords only: walk_array at once
  node,    // anything else (const, enums of other values, applicators): the node's walk
};
// What a scalar leaf checks of a string after its length: one check, or
// `several` (the node's enum, pattern and format in turn). compile.cc turns
// the usual combinations into a leaf_op.
enum class string_check : uint8_t { none = 0, uuid = 1, date_time = 2, enum_values = 4, pattern = 8, several = 16 };
// What check_leaf does first, one value per common leaf shape, chosen by
// compile.cc from the fields below: a string-only leaf with one string check
// (or none) and a number-only leaf are checked without testing the kind,
// the type mask and the string checks one after another. `general` runs the
// leaf by its kind as written below.
enum class leaf_op : uint8_t { general, string, uuid, date_time, enum_values, pattern, number, object, array, any };
struct leaf {
  leaf_op op = leaf_op::general;
  leaf_kind kind = leaf_kind::node;
  string_check strings = string_check::none;
  uint32_t node = 0;  // the subschema, for its full check
  // scalar: the tape types (tape.h) that can pass here, as tape::type_bit()s.
  // A double is not among them under "integer" alone: whether it has a
  // fractional part is the node's check.
  uint64_t tape_types = 0;
  // scalar strings: a string of n bytes with n - min_bytes <= byte_span
  // (unsigned) meets minLength and maxLength without counting characters
  // (a character is 1 to 4 bytes). min_bytes UINT32_MAX and byte_span 0
  // settle nothing.
  uint32_t min_bytes = 0, byte_span = UINT32_MAX;
  // scalar numbers: minimum, maximum and the exclusive ones as one closed
  // range (x > a is x >= the next double above a).
  double low = 0, high = 0;
};

struct property_rule {
  std::string name;
  uint32_t node;
  // This property's bit among node::required_props (its index's, for the
  // first 64; 0 after), set by the walker as it meets the member.
  uint64_t seen_bit = 0;
};

// A property as the walker's member loop reads it, in one flat struct: the
// name as the tape holds it, the bit of `required` and the leaf of its
// subschema.
struct member_leaf {
  tape_text name;
  uint32_t index = 0;  // in node::properties
  uint64_t seen_bit = 0;
  leaf check;
};

// Where a member name's rule is found among a node's `properties`: an open
// addressing table over a cheap hash of the name (its length and three of
// its bytes), so that a lookup is one hash and usually one compare instead
// of a compare per property. Built by compile.cc, read by walker.cc.
[[nodiscard]] inline uint32_t property_hash(std::string_view key) noexcept {
  const auto* k = reinterpret_cast<const unsigned char*>(key.data());
  const size_t n = key.size();
  if (n == 0) return 0;
  return static_cast<uint32_t>(n * 0x9E3779B1u) ^ (k[0] * 0x85EBCA6Bu) ^ (k[n - 1] * 0xC2B2AE35u) ^ (k[n / 2] * 31u);
}

// One subschema. `has` says which checks it carries, so the walker skips the
// absent ones with one test each.
struct node {
  enum has_bit : uint32_t {
    h_type = 1u << 0,
    h_required = 1u << 1,
    h_properties = 1u << 2,
    h_additional = 1u << 3,  // additionalProperties (false or a schema)
    h_enum = 1u << 4,
    h_const = 1u << 5,
    h_minimum = 1u << 6,
    h_maximum = 1u << 7,
    h_exclusive_minimum = 1u << 8,
    h_exclusive_maximum = 1u << 9,
    h_min_length = 1u << 10,
    h_max_length = 1u << 11,
    h_pattern = 1u << 12,
    h_format = 1u << 13,
    h_items = 1u << 14,
    h_min_items = 1u << 15,
    h_max_items = 1u << 16,
    h_ref = 1u << 17,
    h_all_of = 1u << 18,
    h_any_of = 1u << 19,
    h_one_of = 1u << 20,
    h_false = 1u << 21,  // the boolean schema `false`
    // Groups the walker tests at once.
    h_string_checks = h_min_length | h_max_length | h_pattern | h_format,
    h_number_checks = h_minimum | h_maximum | h_exclusive_minimum | h_exclusive_maximum,
    h_array_checks = h_items | h_min_items | h_max_items,
    h_object_checks = h_required | h_properties | h_additional,
    h_rare = h_false | h_ref | h_all_of | h_any_of | h_one_of,
    h_value_checks = h_type | h_const | h_enum | h_string_checks | h_number_checks,  // on the value alone
    h_structure = h_array_checks | h_object_checks | h_rare,                // the rest: descend or apply others
  };
  uint32_t has = 0;
  uint8_t types = 0;
  format_kind format = format_kind::none;
  std::vector<property_rule> properties;
  // The same properties for the member loop, in the same order, plus one
  // entry that ends the table (a default tape_text, which matches nothing).
  std::vector<member_leaf> members;
  // This node as a leaf, where it is a member's or an item's subschema
  // (additionalProperties and items read it here).
  leaf as_leaf;
  // properties by property_hash: slot -> index + 1 in `properties` (0 =
  // empty), a power of two in size, at least twice the properties.
  std::vector<uint32_t> property_slots;
  std::vector<std::string> required;  // as written (messages name the first one missing)
  // `required` split for the walker: the names that are also in
  // `properties` as bits of their index there (the first 64), found while the
  // walker visits the fields anyway; the others looked up one by one.
  uint64_t required_props = 0;
  std::vector<std::string> required_other;
  uint32_t additional = no_node;  // additionalProperties schema; with h_additional and no_node: `false`
  // enum, split: a string is compared with the strings only (as bytes, no
  // JSON equality needed), anything else with the rest. Views into
  // program::source.
  std::vector<std::string_view> enum_strings;
  std::vector<tape_text> enum_texts;  // the same, as the walker compares them
  // enum_texts by a perfect hash, so that a string is compared with the one
  // value it can equal: slot (enum_word(s) * enum_mult) >> enum_shift holds
  // that value's index, or -1. Empty when no multiplier tells the values
  // apart by their first 8 bytes (then each is compared in turn).
  std::vector<int8_t> enum_slots;
  uint64_t enum_mult = 0;
  unsigned enum_shift = 63;
  std::vector<simdjson::dom::element> enum_others;
  simdjson::dom::element const_value;  // for messages
  // The same non-string enum values and the const value as indices on
  // program::literals' tape, where the walker compares them (tape.h).
  std::vector<uint32_t> enum_others_at;
  uint32_t const_at = 0;
  double minimum = 0, maximum = 0, exclusive_minimum = 0, exclusive_maximum = 0;
  uint64_t min_length = 0, max_length = 0, min_items = 0, max_items = 0;
  std::shared_ptr<const re2::RE2> pattern;
  // The same pattern for the bit-parallel matcher, when it is simple enough
  // (stages/schema/simple_pattern.h); else null and RE2 matches.
  std::shared_ptr<const simple_pattern> fast_pattern;
  uint32_t items = no_node;
  uint32_t ref = no_node;
  std::vector<uint32_t> all_of, any_of, one_of;
  std::string where;  // JSON pointer of this subschema in its file ("#/properties/amount")
};

// One schema file, compiled. nodes[0] is the root.
struct program {
  std::string file;  // as named in messages ("project_created/2.json")
  std::vector<node> nodes;
  // The parsed schema text: enum and const values point into it.
  std::shared_ptr<simdjson::dom::parser> source;
  // The enum values that are not strings and the const values of every
  // node, parsed again as one array so that the walker compares them on a
  // tape (node::enum_others_at, node::const_at); null when there are none.
  std::shared_ptr<simdjson::dom::parser> literals;
};

}  // namespace evpipe::stages::schema
