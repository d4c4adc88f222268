#include "stages/schema/compile.h"

#include "stages/schema/simple_pattern.h"
#include "stages/schema/tape.h"

#include <re2/re2.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

namespace evpipe::stages::schema {

namespace {

namespace dom = simdjson::dom;

// A JSON pointer token: '~' and '/' escaped (RFC 6901).
std::string escape_token(std::string_view key) {
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out.push_back(c);
  }
  return out;
}

// A $ref fragment is a URI fragment: percent-decoded before it is a pointer.
std::string percent_decode(std::string_view s) {
  std::string out;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Keywords that carry no assertion: accepted and given no effect (2020-12
// meta-data and core annotations). $schema and $id only at the root, where
// they change nothing this subset does.
bool is_annotation(std::string_view k) {
  static const std::set<std::string_view> names = {"$comment", "title",      "description", "default",
                                                   "examples", "deprecated", "readOnly",    "writeOnly"};
  return names.count(k) > 0;
}

class compiler {
 public:
  compiler(program& p, dom::element root) : p_(p), root_(root) {}

  void run() {
    (void)compile(root_, "#", true);
    // References are resolved after the tree, so a $ref may point anywhere in
    // the file, including at a subschema compiled later or not at all.
    while (!pending_refs_.empty()) {
      auto [from, target] = std::move(pending_refs_.back());
      pending_refs_.pop_back();
      p_.nodes[from].ref = resolve(target, p_.nodes[from].where);
    }
    check_cycles();
    skip_plain_refs();
    index_literals();
    build_leaves();
  }

 private:
  [[noreturn]] void fail(const std::string& where, const std::string& problem) const {
    throw schema_error(p_.file + " at " + where + ": " + problem);
  }

  uint32_t resolve(const std::string& ref, const std::string& where) {
    std::string fragment = percent_decode(std::string_view(ref).substr(1));
    std::string key = "#" + fragment;
    if (auto it = by_pointer_.find(key); it != by_pointer_.end()) return it->second;
    dom::element target;
    if (!fragment.empty() && fragment.front() != '/') {
      fail(where + "/$ref", "\"" + ref + "\" is not a JSON pointer (\"#/$defs/name\"); $anchor is not supported");
    }
    if (root_.at_pointer(fragment).get(target) != simdjson::SUCCESS) {
      fail(where + "/$ref", "\"" + ref + "\" points at nothing in this file");
    }
    return compile(target, key, false);
  }

  uint64_t count(dom::element v, const std::string& at) const {
    uint64_t n = 0;
    double d = 0;
    if (v.get_uint64().get(n) == simdjson::SUCCESS) return n;
    if (v.is_double() && v.get_double().get(d) == simdjson::SUCCESS && d >= 0 && d < 1.8e19 &&
        static_cast<double>(static_cast<uint64_t>(d)) == d) {
      return static_cast<uint64_t>(d);
    }
    fail(at, "must be a non-negative integer");
  }

  double number(dom::element v, const std::string& at) const {
    double d = 0;
    if (!v.is_number() || v.get_double().get(d) != simdjson::SUCCESS) fail(at, "must be a number");
    return d;
  }

  std::vector<uint32_t> schema_list(dom::element v, const std::string& at) {
    dom::array a;
    if (v.get_array().get(a) != simdjson::SUCCESS || a.size() == 0) fail(at, "must be a non-empty array of schemas");
    std::vector<uint32_t> out;
    size_t i = 0;
    for (dom::element s : a) out.push_back(compile(s, at + "/" + std::to_string(i++), false));
    return out;
  }

  uint8_t type_bits(dom::element v, const std::string& at) const {
    static const std::map<std::string_view, uint8_t> names = {
        {"null", t_null},     {"boolean", t_boolean}, {"integer", t_integer}, {"number", t_number | t_integer},
        {"string", t_string}, {"array", t_array},     {"object", t_object}};
    auto one = [&](dom::element e, const std::string& where) -> uint8_t {
      std::string_view s;
      if (e.get_string().get(s) != simdjson::SUCCESS || !names.count(s)) {
        fail(where, "must be one of null, boolean, integer, number, string, array, object");
      }
      return names.at(s);
    };
    dom::array a;
    if (v.get_array().get(a) != simdjson::SUCCESS) return one(v, at);
    if (a.size() == 0) fail(at, "must name at least one type");
    uint8_t bits = 0;
    size_t i = 0;
    for (dom::element e : a) bits |= one(e, at + "/" + std::to_string(i++));
    return bits;
  }

  uint32_t compile(dom::element e, const std::string& where, bool root) {
    if (auto it = by_pointer_.find(where); it != by_pointer_.end()) return it->second;
    const uint32_t idx = static_cast<uint32_t>(p_.nodes.size());
    p_.nodes.emplace_back();
    by_pointer_[where] = idx;
    // Built aside and moved in at the end: compiling children grows p_.nodes.
    node n;
    n.where = where;
    bool b = false;
    dom::object obj;
    if (e.get_bool().get(b) == simdjson::SUCCESS) {
      if (!b) n.has |= node::h_false;
    } else if (e.get_object().get(obj) != simdjson::SUCCESS) {
      fail(where, "a schema must be an object or true/false");
    } else {
      for (auto field : obj) compile_keyword(n, field.key, field.value, where, root);
      split_required(n);
      hash_properties(n);
    }
    p_.nodes[idx] = std::move(n);
    return idx;
  }

  void compile_keyword(node& n, std::string_view k, dom::element v, const std::string& where, bool root) {
    const std::string at = where + "/" + escape_token(k);
    std::string_view s;
    if (k == "type") {
      n.has |= node::h_type;
      n.types = type_bits(v, at);
    } else if (k == "required") {
      dom::array a;
      if (v.get_array().get(a) != simdjson::SUCCESS) fail(at, "must be an array of strings");
      for (dom::element r : a) {
        if (r.get_string().get(s) != simdjson::SUCCESS) fail(at, "must be an array of strings");
        n.required.emplace_back(s);
      }
      n.has |= node::h_required;
    } else if (k == "properties") {
      dom::object props;
      if (v.get_object().get(props) != simdjson::SUCCESS) fail(at, "must be an object of schemas");
      for (auto p : props) {
        uint32_t child = compile(p.value, at + "/" + escape_token(p.key), false);
        // A name given twice: the walker has always applied the first; the
        // later ones are compiled (a mistake in one still refuses the file)
        // but not kept, so no lookup can reach them.
        const bool repeated = std::any_of(n.properties.begin(), n.properties.end(),
                                          [&](const property_rule& r) { return r.name == p.key; });
        if (!repeated) {
          const size_t i = n.properties.size();
          n.properties.push_back({std::string(p.key), child, i < 64 ? uint64_t{1} << i : 0});
        }
      }
      n.has |= node::h_properties;
    } else if (k == "additionalProperties") {
      bool allowed = false;
      if (v.get_bool().get(allowed) == simdjson::SUCCESS) {
        if (!allowed) n.has |= node::h_additional;  // `true` allows everything: no check
      } else {
        n.additional = compile(v, at, false);
        n.has |= node::h_additional;
      }
    } else if (k == "enum") {
      dom::array a;
      if (v.get_array().get(a) != simdjson::SUCCESS) fail(at, "must be an array");
      for (dom::element x : a) {
        std::string_view text;
        if (x.get_string().get(text) == simdjson::SUCCESS) n.enum_strings.push_back(text);
        else n.enum_others.push_back(x);
      }
      n.has |= node::h_enum;
    } else if (k == "const") {
      n.const_value = v;
      n.has |= node::h_const;
    } else if (k == "minimum") {
      n.minimum = number(v, at), n.has |= node::h_minimum;
    } else if (k == "maximum") {
      n.maximum = number(v, at), n.has |= node::h_maximum;
    } else if (k == "exclusiveMinimum") {
      n.exclusive_minimum = number(v, at), n.has |= node::h_exclusive_minimum;
    } else if (k == "exclusiveMaximum") {
      n.exclusive_maximum = number(v, at), n.has |= node::h_exclusive_maximum;
    } else if (k == "minLength") {
      n.min_length = count(v, at), n.has |= node::h_min_length;
    } else if (k == "maxLength") {
      n.max_length = count(v, at), n.has |= node::h_max_length;
    } else if (k == "minItems") {
      n.min_items = count(v, at), n.has |= node::h_min_items;
    } else if (k == "maxItems") {
      n.max_items = count(v, at), n.has |= node::h_max_items;
    } else if (k == "pattern") {
      if (v.get_string().get(s) != simdjson::SUCCESS) fail(at, "must be a string");
      RE2::Options opts;
      opts.set_log_errors(false);
      auto re = std::make_shared<const RE2>(re2::StringPiece(s.data(), s.size()), opts);
      if (!re->ok()) fail(at, "\"" + std::string(s) + "\" is not a pattern RE2 accepts: " + re->error());
      n.pattern = std::move(re);
      if (auto fast = simple_pattern::compile(s)) n.fast_pattern = std::make_shared<const simple_pattern>(*fast);
      n.has |= node::h_pattern;
    } else if (k == "format") {
      if (v.get_string().get(s) != simdjson::SUCCESS) fail(at, "must be a string");
      if (s == "uuid") n.format = format_kind::uuid;
      else if (s == "date-time") n.format = format_kind::date_time;
      else fail(at, "format \"" + std::string(s) + "\" is not supported (uuid, date-time)");
      n.has |= node::h_format;
    } else if (k == "items") {
      if (v.is_array()) fail(at, "items must be one schema (2020-12); the array form (prefixItems) is not supported");
      n.items = compile(v, at, false);
      n.has |= node::h_items;
    } else if (k == "$ref") {
      if (v.get_string().get(s) != simdjson::SUCCESS) fail(at, "must be a string");
      if (s.empty() || s.front() != '#') {
        fail(at, "\"" + std::string(s) + "\": only references within the file (\"#/$defs/name\") are supported");
      }
      n.has |= node::h_ref;
      // The node is not in p_.nodes yet: resolved by run() once it is.
      pending_refs_.emplace_back(static_cast<uint32_t>(by_pointer_.at(where)), std::string(s));
    } else if (k == "allOf") {
      n.all_of = schema_list(v, at), n.has |= node::h_all_of;
    } else if (k == "anyOf") {
      n.any_of = schema_list(v, at), n.has |= node::h_any_of;
    } else if (k == "oneOf") {
      n.one_of = schema_list(v, at), n.has |= node::h_one_of;
    } else if (k == "$defs") {
      dom::object defs;
      if (v.get_object().get(defs) != simdjson::SUCCESS) fail(at, "must be an object of schemas");
      // Compiled now, referenced or not: a mistake in one is found at load.
      for (auto d : defs) (void)compile(d.value, at + "/" + escape_token(d.key), false);
    } else if (k == "$schema" && root) {
      if (v.get_string().get(s) != simdjson::SUCCESS ||
          (s != "https://json-schema.org/draft/2020-12/schema" && s != "https://json-schema.org/draft/2020-12/schema#")) {
        fail(at, "only \"https://json-schema.org/draft/2020-12/schema\" is supported");
      }
    } else if (k == "$id" && root) {
      if (!v.is_string()) fail(at, "must be a string");
    } else if (is_annotation(k)) {
      // meta-data: no effect on validation
    } else {
      fail(at, "keyword \"" + std::string(k) + "\" is not supported (docs/schemas.md lists those that are)");
    }
  }

  static void split_required(node& n) {
    for (const auto& name : n.required) {
      size_t i = 0;
      while (i < n.properties.size() && n.properties[i].name != name) ++i;
      if (i < n.properties.size() && i < 64) {
        n.required_props |= uint64_t{1} << i;
      } else {
        n.required_other.push_back(name);
      }
    }
  }

  static void hash_properties(node& n) {
    if (n.properties.empty()) return;
    size_t size = 4;
    while (size < 2 * n.properties.size()) size *= 2;
    n.property_slots.assign(size, 0);
    for (uint32_t i = 0; i < n.properties.size(); ++i) {
      size_t slot = property_hash(n.properties[i].name) & (size - 1);
      while (n.property_slots[slot] != 0) slot = (slot + 1) & (size - 1);
      n.property_slots[slot] = i + 1;
    }
  }

  // Each node as a leaf (program.h), then each node's member table with the
  // leaves of its properties. Last: node indices are final here.
  void build_leaves() {
    for (uint32_t i = 0; i < p_.nodes.size(); ++i) p_.nodes[i].as_leaf = leaf_of(p_.nodes[i], i);
    for (auto& n : p_.nodes) {
      n.members.clear();
      for (uint32_t i = 0; i < n.properties.size(); ++i) {
        const property_rule& rule = n.properties[i];
        member_leaf m;
        m.name = tape_text::of(rule.name);
        m.index = i;
        m.seen_bit = rule.seen_bit;
        m.check = p_.nodes[rule.node].as_leaf;
        n.members.push_back(m);
      }
      n.members.emplace_back();  // the end: a name that matches nothing
      n.enum_texts.clear();
      for (std::string_view e : n.enum_strings) n.enum_texts.push_back(tape_text::of(e));
      hash_enum(n);
    }
  }

  // node::enum_slots: a multiplier under which the values' first 8 bytes
  // fall in distinct slots of a table of at least twice their number.
  static void hash_enum(node& n) {
    n.enum_slots.clear();
    const size_t count = n.enum_texts.size();
    if constexpr (std::endian::native != std::endian::little) return;
    if (count < 2 || count > 64) return;
    unsigned bits = 1;
    while ((size_t{1} << bits) < 2 * count) ++bits;
    std::vector<uint64_t> words;
    for (const auto& t : n.enum_texts) words.push_back(enum_word(t.bytes));
    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (int attempt = 0; attempt < 4096; ++attempt) {
      // splitmix64: a fresh odd multiplier per attempt
      state += 0x9E3779B97F4A7C15ull;
      uint64_t z = state;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      const uint64_t mult = (z ^ (z >> 31)) | 1;
      std::vector<int8_t> slots(size_t{1} << bits, -1);
      bool distinct = true;
      for (size_t i = 0; i < count && distinct; ++i) {
        int8_t& slot = slots[(words[i] * mult) >> (64 - bits)];
        distinct = slot < 0;
        slot = static_cast<int8_t>(i);
      }
      if (distinct) {
        n.enum_slots = std::move(slots);
        n.enum_mult = mult;
        n.enum_shift = 64 - bits;
        return;
      }
    }
  }

  static leaf leaf_of(const node& n, uint32_t index) {
    leaf l;
    l.node = index;
    const uint32_t has = n.has;
    constexpr uint32_t scalar_keywords = node::h_type | node::h_enum | node::h_string_checks | node::h_number_checks;
    if (has == 0) {
      l.kind = leaf_kind::any;
    } else if ((has & ~scalar_keywords) == 0 && n.enum_others.empty()) {
      l.kind = leaf_kind::scalar;
      uint8_t types = (has & node::h_type) ? n.types : uint8_t(t_null | t_boolean | t_integer | t_number | t_string | t_array | t_object);
      if (has & node::h_enum) types &= t_string;  // every enum value is a string: nothing else can pass
      using tape::type_bit;
      if (types & t_null) l.tape_types |= type_bit('n');
      if (types & t_boolean) l.tape_types |= type_bit('t') | type_bit('f');
      if (types & (t_integer | t_number)) l.tape_types |= type_bit('l') | type_bit('u');
      if (types & t_number) l.tape_types |= type_bit('d');
      if (types & t_string) l.tape_types |= type_bit('"');
      if (types & t_array) l.tape_types |= type_bit('[');
      if (types & t_object) l.tape_types |= type_bit('{');
      const uint32_t extra = has & (node::h_enum | node::h_pattern | node::h_format);
      if (extra == node::h_enum) l.strings = string_check::enum_values;
      else if (extra == node::h_pattern) l.strings = string_check::pattern;
      else if (extra == node::h_format) l.strings = n.format == format_kind::uuid ? string_check::uuid : string_check::date_time;
      else if (extra != 0) l.strings = string_check::several;
      // (n + 3) / 4 >= min_length  <=>  n >= 4 * min_length - 3.
      const uint64_t lowest = !(has & node::h_min_length) || n.min_length == 0 ? 0
                              : n.min_length > (uint64_t{1} << 32)          ? UINT64_MAX
                                                                              : 4 * n.min_length - 3;
      const uint64_t highest = (has & node::h_max_length) ? std::min<uint64_t>(n.max_length, UINT32_MAX) : UINT32_MAX;
      if (lowest <= highest) {
        l.min_bytes = static_cast<uint32_t>(lowest);
        l.byte_span = static_cast<uint32_t>(highest - lowest);
      } else {
        l.min_bytes = UINT32_MAX, l.byte_span = 0;
      }
      constexpr double inf = std::numeric_limits<double>::infinity();
      l.low = -inf, l.high = inf;
      if (has & node::h_minimum) l.low = std::max(l.low, n.minimum);
      if (has & node::h_exclusive_minimum) l.low = std::max(l.low, std::nextafter(n.exclusive_minimum, inf));
      if (has & node::h_maximum) l.high = std::min(l.high, n.maximum);
      if (has & node::h_exclusive_maximum) l.high = std::min(l.high, std::nextafter(n.exclusive_maximum, -inf));
    } else if ((has & node::h_type) && n.types == t_object && (has & ~(node::h_type | node::h_object_checks)) == 0) {
      l.kind = leaf_kind::object;
    } else if ((has & node::h_type) && n.types == t_array && (has & ~(node::h_type | node::h_array_checks)) == 0) {
      l.kind = leaf_kind::array;
    }
    l.op = op_of(l);
    return l;
  }

  // The leaf's first step (program.h, leaf_op).
  static leaf_op op_of(const leaf& l) {
    using tape::type_bit;
    switch (l.kind) {
      case leaf_kind::any: return leaf_op::any;
      case leaf_kind::object: return leaf_op::object;
      case leaf_kind::array: return leaf_op::array;
      case leaf_kind::node: return leaf_op::general;
      case leaf_kind::scalar: break;
    }
    const uint64_t numbers = type_bit('l') | type_bit('u') | type_bit('d');
    if (l.tape_types != 0 && (l.tape_types & ~numbers) == 0) return leaf_op::number;
    // Strings, and perhaps null or booleans (one word each, nothing to check).
    const uint64_t words = type_bit('n') | type_bit('t') | type_bit('f');
    if (!(l.tape_types & type_bit('"')) || (l.tape_types & ~(type_bit('"') | words)) != 0) return leaf_op::general;
    switch (l.strings) {
      case string_check::none: return leaf_op::string;
      case string_check::uuid: return leaf_op::uuid;
      case string_check::date_time: return leaf_op::date_time;
      case string_check::enum_values: return leaf_op::enum_values;
      case string_check::pattern: return leaf_op::pattern;
      case string_check::several: return leaf_op::general;
    }
    return leaf_op::general;
  }

  // The walker compares enum and const values on a tape (stages/schema/tape.h),
  // and a dom::element does not say where on its tape it is: the values are
  // written out as one array, parsed again, and found by their place in it.
  void index_literals() {
    std::string text = "[";
    for (const auto& n : p_.nodes) {
      if (n.has & node::h_const) {
        text += simdjson::minify(n.const_value);
        text += ',';
      }
      for (const auto& e : n.enum_others) {
        text += simdjson::minify(e);
        text += ',';
      }
    }
    if (text.size() == 1) return;
    text.back() = ']';
    p_.literals = std::make_shared<dom::parser>();
    dom::element parsed;
    if (auto err = p_.literals->parse(text).get(parsed)) {
      fail("#", std::string("enum and const values do not parse again: ") + simdjson::error_message(err));
    }
    const tape::view t = tape::of(p_.literals->doc);
    size_t at = tape::root + 1;  // the first item of the array
    for (auto& n : p_.nodes) {
      if (n.has & node::h_const) {
        n.const_at = static_cast<uint32_t>(at);
        at = tape::after(t, at);
      }
      for (size_t i = 0; i < n.enum_others.size(); ++i) {
        n.enum_others_at.push_back(static_cast<uint32_t>(at));
        at = tape::after(t, at);
      }
    }
  }

  // A subschema that is nothing but a $ref (the usual {"$ref": "#/$defs/x"})
  // is skipped: whoever uses it points at the target, one dispatch less per
  // value. After check_cycles(), so that every chain of them ends.
  void skip_plain_refs() {
    auto target = [&](uint32_t i) {
      while (i != no_node && p_.nodes[i].has == node::h_ref) i = p_.nodes[i].ref;
      return i;
    };
    for (auto& n : p_.nodes) {
      for (auto& prop : n.properties) prop.node = target(prop.node);
      n.additional = target(n.additional);
      n.items = target(n.items);
      n.ref = target(n.ref);
      for (auto* list : {&n.all_of, &n.any_of, &n.one_of}) {
        for (auto& c : *list) c = target(c);
      }
    }
  }

  // A $ref, allOf, anyOf or oneOf applies its target to the same value; a
  // loop of them would never descend into the payload and never end.
  void check_cycles() const {
    std::vector<uint8_t> state(p_.nodes.size(), 0);  // 0 new, 1 on the path, 2 done
    auto visit = [&](auto& self, uint32_t i) -> void {
      if (state[i] == 2) return;
      if (state[i] == 1) fail(p_.nodes[i].where, "$ref / allOf / anyOf / oneOf loop that never descends into the value");
      state[i] = 1;
      const node& n = p_.nodes[i];
      if (n.ref != no_node) self(self, n.ref);
      for (auto* list : {&n.all_of, &n.any_of, &n.one_of}) {
        for (uint32_t c : *list) self(self, c);
      }
      state[i] = 2;
    };
    for (uint32_t i = 0; i < p_.nodes.size(); ++i) visit(visit, i);
  }

  program& p_;
  dom::element root_;
  std::map<std::string, uint32_t> by_pointer_;  // compiled subschemas by location; $refs share them
  std::vector<std::pair<uint32_t, std::string>> pending_refs_;
};

}  // namespace

std::shared_ptr<const program> compile_schema(std::string_view json_text, const std::string& file) {
  auto p = std::make_shared<program>();
  p->file = file;
  p->source = std::make_shared<dom::parser>();
  dom::element root;
  if (auto err = p->source->parse(json_text.data(), json_text.size(), true).get(root)) {
    throw schema_error(file + ": not valid JSON: " + simdjson::error_message(err));
  }
  compiler(*p, root).run();
  return p;
}

std::shared_ptr<const program> compile_schema_file(const std::string& path, const std::string& name) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw schema_error(name + ": cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return compile_schema(text.str(), name);
}

}  // namespace evpipe::stages::schema
