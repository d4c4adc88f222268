#include "config/route_sections.h"

#include <re2/re2.h>

#include <charconv>
#include <functional>
#include <cmath>
#include <limits>
#include <set>

#include "config/reader.h"

namespace evpipe::config {

const char* column_type_name(column_type t) noexcept {
  switch (t) {
    case column_type::text: return "text";
    case column_type::int4: return "int4";
    case column_type::int8: return "int8";
    case column_type::float8: return "float8";
    case column_type::boolean: return "bool";
    case column_type::timestamptz: return "timestamptz";
    case column_type::uuid: return "uuid";
    case column_type::jsonb: return "jsonb";
  }
  return "?";
}

namespace detail {

namespace {

// Unquoted lowercase identifiers, as for [postgres] schema: they mean the
// same in every statement evpipe builds, with no quoting rules to explain.
const RE2& identifier_re() {
  static const RE2 re("[a-z_][a-z0-9_]{0,62}", byte_patterns());
  return re;
}

bool parse_type(const std::string& s, column_type& out) {
  static const std::pair<const char*, column_type> names[] = {
      {"text", column_type::text},         {"int4", column_type::int4},
      {"int8", column_type::int8},         {"float8", column_type::float8},
      {"bool", column_type::boolean},      {"timestamptz", column_type::timestamptz},
      {"uuid", column_type::uuid},         {"jsonb", column_type::jsonb}};
  for (auto& [n, t] : names) {
    if (s == n) {
      out = t;
      return true;
    }
  }
  return false;
}

// "a.b[2].c" -> {"a", "b", "[2]", "c"}; false when malformed.
bool parse_json_path(const std::string& s, std::vector<std::string>& out) {
  out.clear();
  size_t i = 0;
  while (i < s.size()) {
    size_t end = s.find_first_of(".[", i);
    std::string key = s.substr(i, end == std::string::npos ? std::string::npos : end - i);
    if (key.empty()) return false;
    out.push_back(key);
    i = end == std::string::npos ? s.size() : end;
    while (i < s.size() && s[i] == '[') {
      size_t close = s.find(']', i);
      if (close == std::string::npos || close == i + 1) return false;
      std::string digits = s.substr(i + 1, close - i - 1);
      if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) return false;
      out.push_back("[" + digits + "]");
      i = close + 1;
    }
    if (i < s.size()) {
      if (s[i] != '.') return false;
      if (++i == s.size()) return false;  // trailing dot
    }
  }
  return !out.empty();
}

void parse_source(route_column& c, const std::function<void(const std::string&)>& fail) {
  const std::string& s = c.source_text;
  static const RE2 segment_re(R"(topic\[([0-9]{1,3})\])", byte_patterns());
  std::string digits;
  if (s == "topic") {
    c.source = column_source::topic;
  } else if (s == "received_at") {
    c.source = column_source::received_at;
  } else if (s == "message") {
    c.source = column_source::message;
  } else if (RE2::FullMatch(s, segment_re, &digits)) {
    c.source = column_source::topic_segment;
    c.segment = static_cast<uint32_t>(std::stoul(digits));
  } else if (parse_json_path(s, c.path)) {
    c.source = column_source::json_path;
  } else {
    fail("\"" + s + "\" is not a source: write a JSON path (\"payload.temperature\", \"readings[0]\"), " +
         "\"topic[N]\", \"topic\", \"received_at\" or \"message\"");
  }
}

// The default as text the column type parses; the TOML value's own type must
// fit the column's (a float for an int4 column is a mistake worth reporting).
std::string default_text(const toml::node& n, column_type t, const std::function<void(const std::string&)>& fail) {
  switch (t) {
    case column_type::int4:
    case column_type::int8: {
      if (!n.is_integer()) fail("must be an integer for a " + std::string(column_type_name(t)) + " column");
      int64_t v = *n.value<int64_t>();
      if (t == column_type::int4 && (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())) {
        fail("is out of range for int4");
      }
      return std::to_string(v);
    }
    case column_type::float8: {
      if (!n.is_integer() && !n.is_floating_point()) fail("must be a number for a float8 column");
      double v = *n.value<double>();
      if (!std::isfinite(v)) fail("must be finite (PostgreSQL stores NaN and Infinity, readers rarely expect them)");
      char buf[64];
      auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
      return std::string(buf, p);
    }
    case column_type::boolean:
      if (!n.is_boolean()) fail("must be true or false for a bool column");
      return *n.value<bool>() ? "true" : "false";
    default:
      if (!n.is_string()) fail("must be a string for a " + std::string(column_type_name(t)) + " column");
      return *n.value<std::string>();
  }
}

route_column parse_column(const toml::table& t, const std::string& where, const std::string& origin) {
  table_reader r(t, where, origin);
  route_column c;
  std::string type;
  r.str("name", c.name, false);
  r.str("source", c.source_text, false);
  r.str("type", type, false);
  r.boolean("required", c.required);
  // `default` takes any TOML type (checked against the column's type below),
  // so unknown keys are checked here rather than by table_reader.
  const toml::node* def = t.get("default");
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    if (key != "name" && key != "source" && key != "type" && key != "required" && key != "default") {
      r.fail(key, "unknown key (a column has name, source, type, required, default)");
    }
  }
  if (c.name.empty()) r.fail("name", "is required");
  if (!RE2::FullMatch(c.name, identifier_re())) r.fail("name", "\"" + c.name + "\" must be a lowercase identifier");
  if (c.source_text.empty()) c.source_text = c.name;  // the usual case: the same name in the message
  if (type.empty()) r.fail("type", "is required (text, int4, int8, float8, bool, timestamptz, uuid or jsonb)");
  if (!parse_type(type, c.type)) {
    r.fail("type", "\"" + type + "\" is not one of text, int4, int8, float8, bool, timestamptz, uuid, jsonb");
  }
  parse_source(c, [&](const std::string& p) { r.fail("source", p); });
  auto type_name = std::string(column_type_name(c.type));
  if (c.source == column_source::received_at && c.type != column_type::timestamptz) {
    r.fail("type", "source \"received_at\" needs type timestamptz, got " + type_name);
  }
  if (c.source == column_source::message && c.type != column_type::jsonb && c.type != column_type::text) {
    r.fail("type", "source \"message\" needs type jsonb or text, got " + type_name);
  }
  if (c.source == column_source::topic && c.type != column_type::text) {
    r.fail("type", "source \"topic\" needs type text, got " + type_name);
  }
  if (c.source == column_source::topic_segment && c.type == column_type::jsonb) {
    r.fail("type", "a topic segment is text, not jsonb");
  }
  bool always_there = c.source == column_source::topic || c.source == column_source::received_at ||
                      c.source == column_source::message;
  if (def) {
    if (c.required) r.fail("default", "a required column has no default (choose one)");
    if (always_there) r.fail("default", "source \"" + c.source_text + "\" is always present");
    c.default_text = default_text(*def, c.type, [&](const std::string& p) { r.fail("default", p); });
    c.has_default = true;
  }
  return c;
}

std::string route_where(size_t i, const std::string& name) {
  return name.empty() ? "[[routes]] #" + std::to_string(i) : "[[routes]] \"" + name + "\"";
}

route parse_route(const toml::table& t, size_t index, const std::string& origin,
                  const std::set<std::string>& taken_names) {
  std::string name;
  if (auto* n = t.get("name"); n && n->is_string()) name = *n->value<std::string>();
  std::string where = route_where(index, name);
  table_reader r(t, where, origin);
  route rt;
  std::string envelope = "standard", mode = "append";
  r.str("name", rt.name, false);
  r.str_list("topics", rt.topics);
  r.str_list("kinds", rt.kinds);
  r.boolean("also", rt.also);
  r.str("envelope", envelope, false);
  r.str("table", rt.table);
  r.str("mode", mode, false);
  r.str_list("key", rt.key);
  r.str("order_by", rt.order_by);
  r.boolean("mirror", rt.mirror);
  r.str("partition_by", rt.partition_by);
  // columns and idempotency have shapes table_reader does not read.
  const toml::node* columns = t.get("columns");
  const toml::node* idempotency = t.get("idempotency");
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    static const std::set<std::string> known = {"name", "topics", "kinds", "also", "envelope", "table", "mode",
                                                "key", "order_by", "mirror", "columns", "idempotency",
                                                "partition_by"};
    if (!known.count(key)) r.fail(key, "unknown key");
  }
  if (rt.name.empty()) rt.name = "route " + std::to_string(index);
  if (taken_names.count(rt.name)) r.fail("name", "\"" + rt.name + "\" names an earlier route too");

  if (envelope == "standard") {
    rt.envelope_standard = true;
  } else if (envelope == "none") {
    rt.envelope_standard = false;
  } else {
    r.fail("envelope", "must be \"standard\" or \"none\", got \"" + envelope + "\"");
  }
  if (rt.topics.empty() && rt.kinds.empty()) {
    r.fail("topics", "a route needs topics (MQTT filters) or kinds to say which messages it takes");
  }
  for (const auto& f : rt.topics) {
    if (!valid_filter(f)) r.fail("topics", "\"" + f + "\" is not a valid MQTT topic filter");
  }
  for (const auto& k : rt.kinds) {
    if (k.empty()) r.fail("kinds", "a kind is a non-empty string");
  }
  if (!rt.envelope_standard && !rt.kinds.empty()) {
    r.fail("kinds", "a route with envelope = \"none\" matches by topics only (its messages have no kind)");
  }

  static const RE2 table_re("[a-z_][a-z0-9_]{0,62}(\\.[a-z_][a-z0-9_]{0,62})?", byte_patterns());
  if (!rt.table.empty() && !RE2::FullMatch(rt.table, table_re)) {
    r.fail("table", "\"" + rt.table + "\" must be a lowercase identifier, optionally schema.table");
  }
  if (rt.table.empty() && !rt.mirror) r.fail("table", "is required (or mirror = true for a route that only mirrors)");

  if (columns) {
    if (!columns->is_array() || (!columns->as_array()->empty() && !columns->is_array_of_tables())) {
      r.fail("columns", "must be an array of tables: columns = [{ name = ..., source = ..., type = ... }]");
    }
    std::set<std::string> names;
    size_t ci = 0;
    for (auto& item : *columns->as_array()) {
      ++ci;
      route_column c = parse_column(*item.as_table(), where + " columns #" + std::to_string(ci), origin);
      if (!names.insert(c.name).second) r.fail("columns", "column \"" + c.name + "\" is listed twice");
      rt.columns.push_back(std::move(c));
    }
  }
  if (!rt.table.empty() && rt.columns.empty()) r.fail("columns", "a route with a table needs at least one column");
  if (rt.table.empty() && !rt.columns.empty()) r.fail("columns", "columns need a table");

  if (mode == "upsert") {
    rt.upsert = true;
    if (rt.table.empty()) r.fail("mode", "upsert needs a table");
    if (rt.key.empty()) r.fail("key", "mode = \"upsert\" needs key = [columns of the table's unique key]");
    std::set<std::string> seen;
    for (const auto& k : rt.key) {
      if (!rt.column(k)) r.fail("key", "\"" + k + "\" is not one of the route's columns");
      if (!seen.insert(k).second) r.fail("key", "\"" + k + "\" is listed twice");
      if (!rt.column(k)->required && !rt.column(k)->has_default &&
          rt.column(k)->source != column_source::topic && rt.column(k)->source != column_source::topic_segment) {
        r.fail("key", "key column \"" + k + "\" must be required or have a default (a NULL key matches no row)");
      }
    }
    if (!rt.order_by.empty()) {
      if (!rt.column(rt.order_by)) r.fail("order_by", "\"" + rt.order_by + "\" is not one of the route's columns");
      if (seen.count(rt.order_by)) r.fail("order_by", "\"" + rt.order_by + "\" is part of the key");
    }
  } else if (mode == "append") {
    if (!rt.key.empty()) r.fail("key", "is for mode = \"upsert\"");
    if (!rt.order_by.empty()) r.fail("order_by", "is for mode = \"upsert\"");
    if (!rt.partition_by.empty()) {
      // The column evpipe's partition maintainer ranges the table's
      // partitions on (docs/partitions.md, "Route tables"). Never NULL, so
      // that every row has a period (a NULL key would stay in DEFAULT).
      const route_column* c = rt.column(rt.partition_by);
      if (!c) r.fail("partition_by", "\"" + rt.partition_by + "\" is not one of the route's columns");
      if (c->type != column_type::timestamptz) {
        r.fail("partition_by", "\"" + rt.partition_by + "\" must be a timestamptz column, not " +
                                   column_type_name(c->type));
      }
      if (!c->required && !c->has_default && c->source != column_source::received_at) {
        r.fail("partition_by", "column \"" + rt.partition_by +
                                   "\" must be required, have a default or be received_at (a partition key is never NULL)");
      }
    }
  } else {
    r.fail("mode", "must be \"append\" or \"upsert\", got \"" + mode + "\"");
  }
  if (rt.upsert && !rt.partition_by.empty()) r.fail("partition_by", "is for mode = \"append\"");

  if (idempotency) {
    if (rt.envelope_standard) {
      r.fail("idempotency", "a route with the standard envelope uses its idempotency_key");
    }
    if (idempotency->is_string()) {
      if (*idempotency->value<std::string>() != "digest") {
        r.fail("idempotency", "must be \"digest\" or a list of columns, got \"" + *idempotency->value<std::string>() + "\"");
      }
      rt.idempotency_digest = true;
    } else if (idempotency->is_array()) {
      for (auto& item : *idempotency->as_array()) {
        if (!item.is_string()) r.fail("idempotency", "must be \"digest\" or a list of column names");
        std::string c = *item.value<std::string>();
        const route_column* col = rt.column(c);
        if (!col) r.fail("idempotency", "\"" + c + "\" is not one of the route's columns");
        if (col->source == column_source::received_at) {
          r.fail("idempotency", "\"" + c + "\" is the receive time, which differs for every redelivery");
        }
        rt.idempotency.push_back(c);
      }
      if (rt.idempotency.empty()) r.fail("idempotency", "an empty list identifies nothing (use \"digest\")");
    } else {
      r.fail("idempotency", "must be \"digest\" or a list of column names");
    }
  } else if (!rt.envelope_standard) {
    // Without an envelope there is no key: the bytes are the message's identity.
    rt.idempotency_digest = true;
  }
  return rt;
}

}  // namespace

std::vector<route> parse_routes(const toml::node& routes, const std::string& origin) {
  if (!routes.is_array() || (!routes.as_array()->empty() && !routes.is_array_of_tables())) {
    throw config_error(origin + ": routes must be written [[routes]]");
  }
  std::vector<route> out;
  std::set<std::string> names;
  size_t i = 0;
  for (auto& item : *routes.as_array()) {
    out.push_back(parse_route(*item.as_table(), ++i, origin, names));
    names.insert(out.back().name);
  }
  return out;
}

toml::array routes_to_toml(const std::vector<route>& routes) {
  toml::array out;
  for (const auto& rt : routes) {
    toml::array topics, kinds, key, columns;
    for (const auto& s : rt.topics) topics.push_back(s);
    for (const auto& s : rt.kinds) kinds.push_back(s);
    for (const auto& s : rt.key) key.push_back(s);
    for (const auto& c : rt.columns) {
      toml::table col{{"name", c.name}, {"source", c.source_text}, {"type", column_type_name(c.type)}};
      if (c.required) col.insert("required", true);
      if (c.has_default) {
        switch (c.type) {
          case column_type::int4:
          case column_type::int8: col.insert("default", std::stoll(c.default_text)); break;
          case column_type::float8: col.insert("default", std::stod(c.default_text)); break;
          case column_type::boolean: col.insert("default", c.default_text == "true"); break;
          default: col.insert("default", c.default_text);
        }
      }
      columns.push_back(std::move(col));
    }
    toml::table t{{"name", rt.name},
                  {"envelope", rt.envelope_standard ? "standard" : "none"},
                  {"also", rt.also},
                  {"mode", rt.upsert ? "upsert" : "append"},
                  {"mirror", rt.mirror}};
    if (!rt.topics.empty()) t.insert("topics", std::move(topics));
    if (!rt.kinds.empty()) t.insert("kinds", std::move(kinds));
    if (!rt.table.empty()) t.insert("table", rt.table);
    if (!rt.key.empty()) t.insert("key", std::move(key));
    if (!rt.order_by.empty()) t.insert("order_by", rt.order_by);
    if (!rt.partition_by.empty()) t.insert("partition_by", rt.partition_by);
    if (rt.idempotency_digest && !rt.envelope_standard) {
      t.insert("idempotency", "digest");
    } else if (!rt.idempotency.empty()) {
      toml::array idem;
      for (const auto& s : rt.idempotency) idem.push_back(s);
      t.insert("idempotency", std::move(idem));
    }
    if (!rt.columns.empty()) t.insert("columns", std::move(columns));
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace detail
}  // namespace evpipe::config
