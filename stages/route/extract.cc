#include "stages/route/extract.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

#include "stages/big_numbers.h"
#include "stages/route/pg_binary.h"
#include "stages/validate.h"

namespace evpipe::stages::route {

namespace dom = simdjson::dom;
using config::column_source;
using config::column_type;

std::string_view extract_status_name(extract_status s) noexcept {
  switch (s) {
    case extract_status::ok: return "ok";
    case extract_status::invalid_json: return "invalid_json";
    case extract_status::missing: return "missing";
    case extract_status::wrong_type: return "wrong_type";
    case extract_status::out_of_range: return "out_of_range";
  }
  return "unknown";
}

namespace {

std::string_view json_type_name(dom::element_type t) noexcept {
  switch (t) {
    case dom::element_type::ARRAY: return "an array";
    case dom::element_type::OBJECT: return "an object";
    case dom::element_type::INT64:
    case dom::element_type::UINT64:
    case dom::element_type::DOUBLE: return "a number";
    case dom::element_type::STRING: return "a string";
    case dom::element_type::BOOL: return "a boolean";
    case dom::element_type::NULL_VALUE: return "null";
  }
  return "a value";
}

bool has_nul(std::string_view s) noexcept { return std::memchr(s.data(), 0, s.size()) != nullptr; }

// The level N of a topic; false when it has fewer levels.
bool topic_level(std::string_view topic, uint32_t n, std::string_view& out) noexcept {
  size_t start = 0;
  for (uint32_t i = 0; i < n; ++i) {
    size_t slash = topic.find('/', start);
    if (slash == std::string_view::npos) return false;
    start = slash + 1;
  }
  size_t end = topic.find('/', start);
  out = topic.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
  return true;
}

// The value at a column's path; false when some step is absent.
bool find_path(dom::element root, const std::vector<path_step>& steps, dom::element& out) noexcept {
  dom::element cur = root;
  for (const auto& st : steps) {
    if (st.index >= 0) {
      if (!cur.is_array()) return false;
      auto r = dom::array(cur).at(static_cast<size_t>(st.index));
      if (r.error()) return false;
      cur = r.value_unsafe();
    } else {
      if (!cur.is_object()) return false;
      auto r = dom::object(cur).at_key(st.key);
      if (r.error()) return false;
      cur = r.value_unsafe();
    }
  }
  out = cur;
  return true;
}

std::string quoted_start(std::string_view s) {
  return s.size() <= 64 ? std::string(s) : std::string(s.substr(0, 64)) + "...";
}

// Appends the field for a number beyond int64 or a double (its text).
extract_status append_big_number(std::string& out, column_type type, std::string_view number, std::string& why) {
  switch (type) {
    case column_type::float8: {
      // An integer past 64 bits is still a double.
      double d;
      auto r = std::from_chars(number.data(), number.data() + number.size(), d);
      if (r.ec == std::errc() && r.ptr == number.data() + number.size() && std::isfinite(d)) {
        pg_binary::append_float8(out, d);
        return extract_status::ok;
      }
      why = quoted_start(number) + " is out of range for float8";
      return extract_status::out_of_range;
    }
    case column_type::int4:
    case column_type::int8:
      if (!stages::is_integer_literal(number)) {
        why = "expected an integer, got " + quoted_start(number);
        return extract_status::wrong_type;
      }
      why = quoted_start(number) + " is out of range for " + std::string(config::column_type_name(type));
      return extract_status::out_of_range;
    case column_type::jsonb:
      pg_binary::append_jsonb(out, number);  // jsonb's numeric holds it
      return extract_status::ok;
    case column_type::text: why = "expected a string, got a number"; break;
    case column_type::boolean: why = "expected true or false, got a number"; break;
    case column_type::timestamptz: why = "expected an ISO 8601 date-time string, got a number"; break;
    case column_type::uuid: why = "expected a UUID string, got a number"; break;
  }
  return extract_status::wrong_type;
}

// Appends the field for a JSON value; the failure's `why` says what was wrong.
// With `marked`, strings that are markers (stages/big_numbers.h) are numbers.
extract_status append_json_value(std::string& out, column_type type, dom::element v, bool marked, std::string& why) {
  const auto t = v.type();
  auto wrong = [&](std::string_view expected) {
    why = "expected " + std::string(expected) + ", got " + std::string(json_type_name(t));
    return extract_status::wrong_type;
  };
  if (std::string_view big; marked && t == dom::element_type::STRING && stages::big_number_of(std::string_view(v), big)) {
    return append_big_number(out, type, big, why);
  }
  switch (type) {
    case column_type::text: {
      if (t != dom::element_type::STRING) return wrong("a string");
      std::string_view s(v);
      if (has_nul(s)) {
        why = "text cannot hold U+0000";
        return extract_status::out_of_range;
      }
      pg_binary::append_text(out, s);
      return extract_status::ok;
    }
    case column_type::int4:
    case column_type::int8: {
      int64_t n;
      if (t == dom::element_type::INT64) {
        n = int64_t(v);
      } else if (t == dom::element_type::UINT64) {
        why = std::to_string(uint64_t(v)) + " is out of range for " + config::column_type_name(type);
        return extract_status::out_of_range;
      } else if (t == dom::element_type::DOUBLE) {
        // 3.0 is the integer 3 (some encoders write every number as a double);
        // 3.5 is not an integer at all.
        double d = double(v);
        if (d != std::floor(d)) return wrong("an integer");
        if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) {
          why = std::to_string(d) + " is out of range for " + config::column_type_name(type);
          return extract_status::out_of_range;
        }
        n = static_cast<int64_t>(d);
      } else {
        return wrong("an integer");
      }
      if (type == column_type::int4) {
        if (n < std::numeric_limits<int32_t>::min() || n > std::numeric_limits<int32_t>::max()) {
          why = std::to_string(n) + " is out of range for int4";
          return extract_status::out_of_range;
        }
        pg_binary::append_int4(out, static_cast<int32_t>(n));
      } else {
        pg_binary::append_int8(out, n);
      }
      return extract_status::ok;
    }
    case column_type::float8: {
      // JSON has no NaN or Infinity, and the parser refuses numbers beyond a
      // double's range, so every number here is finite.
      if (t == dom::element_type::INT64) {
        pg_binary::append_float8(out, static_cast<double>(int64_t(v)));
      } else if (t == dom::element_type::UINT64) {
        pg_binary::append_float8(out, static_cast<double>(uint64_t(v)));
      } else if (t == dom::element_type::DOUBLE) {
        pg_binary::append_float8(out, double(v));
      } else {
        return wrong("a number");
      }
      return extract_status::ok;
    }
    case column_type::boolean:
      if (t != dom::element_type::BOOL) return wrong("true or false");
      pg_binary::append_bool(out, bool(v));
      return extract_status::ok;
    case column_type::timestamptz: {
      if (t != dom::element_type::STRING) return wrong("an ISO 8601 date-time string");
      std::string_view s(v);
      int64_t us = 0;
      auto st = parse_timestamp(s, us);
      if (st == parse_status::ok) {
        pg_binary::append_timestamptz(out, us);
        return extract_status::ok;
      }
      why = "\"" + std::string(s.substr(0, 64)) +
            (st == parse_status::malformed ? "\" is not an ISO 8601 date-time" : "\" is out of range for timestamptz");
      return extract_status::out_of_range;
    }
    case column_type::uuid: {
      if (t != dom::element_type::STRING) return wrong("a UUID string");
      std::string_view s(v);
      uint8_t b[16];
      if (!parse_uuid(s, b)) {
        why = "\"" + std::string(s.substr(0, 64)) + "\" is not a UUID";
        return extract_status::out_of_range;
      }
      pg_binary::append_uuid(out, b);
      return extract_status::ok;
    }
    case column_type::jsonb: {
      if (marked) {
        // A marked document's text held no U+0000: its NULs are markers.
        std::string json = simdjson::minify(v);
        stages::unmark_big_numbers(json);
        pg_binary::append_jsonb(out, json);
        return extract_status::ok;
      }
      if (holds_nul(v)) {
        why = "jsonb cannot hold U+0000";
        return extract_status::out_of_range;
      }
      pg_binary::append_jsonb(out, simdjson::minify(v));
      return extract_status::ok;
    }
  }
  return wrong("a value");
}

}  // namespace

extract_status extract_row(const compiled_route& route, dom::element root, const message_view& m,
                           std::string& out, extract_error* err, std::string* identity) {
  const size_t start = out.size();
  auto failed = [&](extract_status st, uint16_t col, std::string why) {
    out.resize(start);
    if (err) {
      err->status = st;
      err->column = col;
      const auto& c = route.columns[col].cfg;
      err->message = "route \"" + route.cfg.name + "\": column \"" + c.name + "\" (source \"" + c.source_text +
                     "\"): " + why;
    }
    return st;
  };
  if (!root.is_object()) {
    if (err) {
      err->status = extract_status::wrong_type;
      err->column = 0;
      err->message = "route \"" + route.cfg.name + "\": the message is " +
                     std::string(json_type_name(root.type())) + ", not a JSON object";
    }
    return extract_status::wrong_type;
  }
  pg_binary::put_u16(out, static_cast<uint16_t>(route.columns.size()));
  std::string why;
  for (uint16_t i = 0; i < route.columns.size(); ++i) {
    const compiled_column& col = route.columns[i];
    const auto& c = col.cfg;
    switch (c.source) {
      case column_source::json_path: {
        dom::element v;
        if (!find_path(root, col.steps, v) || v.is_null()) {
          if (c.required) return failed(extract_status::missing, i, "required, but absent or null");
          if (c.has_default) {
            out.append(col.default_field);
          } else {
            pg_binary::append_null(out);
          }
          break;
        }
        extract_status st = append_json_value(out, c.type, v, m.marked_numbers, why);
        if (st != extract_status::ok) return failed(st, i, why);
        break;
      }
      case column_source::topic_segment: {
        std::string_view level;
        if (!topic_level(m.topic, c.segment, level)) {
          if (c.required) return failed(extract_status::missing, i, "the topic \"" + std::string(m.topic) +
                                                                         "\" has no level " + std::to_string(c.segment));
          if (c.has_default) {
            out.append(col.default_field);
          } else {
            pg_binary::append_null(out);
          }
          break;
        }
        parse_status st = append_from_text(out, c.type, level, &why);
        if (st != parse_status::ok) {
          return failed(st == parse_status::out_of_range ? extract_status::out_of_range : extract_status::wrong_type, i,
                        why);
        }
        break;
      }
      case column_source::topic:
        pg_binary::append_text(out, m.topic);
        break;
      case column_source::received_at:
        pg_binary::append_timestamptz(out, m.received_unix_us - unix_to_pg_epoch_us);
        break;
      case column_source::message:
        // jsonb cannot hold U+0000 (JSON can only write it as \u0000): the
        // tree is walked only when that escape is in the text.
        if (!m.marked_numbers && m.bytes.find("\\u0000") != std::string_view::npos && holds_nul(root)) {
          return failed(extract_status::out_of_range, i, "jsonb cannot hold U+0000");
        }
        if (c.type == column_type::jsonb) {
          pg_binary::append_jsonb(out, m.bytes);
        } else {
          pg_binary::append_text(out, m.bytes);
        }
        break;
    }
  }
  if (identity) {
    // The route's name, then the identity columns' fields in tuple order
    // (identity_columns is ascending): the same bytes as before the
    // positions were sorted, so keys stored by older builds still match.
    identity->assign(route.cfg.name);
    identity->push_back('\0');
    append_fields(std::string_view(out).substr(start), route.identity_columns, *identity);
  }
  return extract_status::ok;
}

void append_fields(std::string_view tuple, std::span<const uint16_t> columns, std::string& out) {
  if (columns.empty() || tuple.size() < 2) return;
  size_t pos = 2;
  size_t next = 0;
  for (uint16_t i = 0; next < columns.size() && pos + 4 <= tuple.size(); ++i) {
    const auto* p = reinterpret_cast<const unsigned char*>(tuple.data() + pos);
    uint32_t len = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
    size_t field = len == 0xFFFFFFFFu ? 4 : 4 + len;
    if (columns[next] == i) {
      out.append(tuple, pos, field);
      ++next;
    }
    pos += field;
  }
}

void route_stage::extract_batch(std::span<const routed_message> in, route_scratch& scratch,
                                std::span<route_rows> rows, std::vector<extract_error>& results) const {
  results.resize(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const routed_message& rm = in[i];
    extract_error& res = results[i];
    res.status = extract_status::ok;
    res.message.clear();
    // simdjson reads up to SIMDJSON_PADDING bytes past the end: parse from a
    // reused padded copy rather than let the parser allocate one per message.
    const std::string_view bytes = rm.msg.bytes;
    if (scratch.padded.size() < bytes.size() + simdjson::SIMDJSON_PADDING) {
      scratch.padded.resize(bytes.size() + simdjson::SIMDJSON_PADDING);
    }
    std::memcpy(scratch.padded.data(), bytes.data(), bytes.size());
    auto doc = scratch.parser.parse(scratch.padded.data(), bytes.size(), false);
    message_view mv = rm.msg;
    if (doc.error() == simdjson::NUMBER_ERROR && stages::mark_big_numbers(bytes, scratch.marked)) {
      // Numbers beyond the parser, as in the intake (pipeline/intake.cc).
      const size_t n = scratch.marked.size();
      scratch.marked.resize(n + simdjson::SIMDJSON_PADDING, '\0');
      doc = scratch.parser.parse(scratch.marked.data(), n, false);
      mv.marked_numbers = true;
    }
    if (doc.error()) {
      res.status = extract_status::invalid_json;
      res.message = std::string("not valid JSON: ") + simdjson::error_message(doc.error());
      continue;
    }
    route_rows& target = rows[rm.route];
    if (extract_row(routes_.at(rm.route), doc.value_unsafe(), mv, target.tuples, &res) == extract_status::ok) {
      ++target.count;
    }
  }
}

}  // namespace evpipe::stages::route
