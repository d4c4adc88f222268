#include "stages/validate.h"

#include <array>

#include <simdjson.h>

#include <cstring>

#include "stages/big_numbers.h"

namespace evpipe::stages {

std::string_view reason_code(reason r) noexcept {
  switch (r) {
    case reason::none: return "none";
    case reason::invalid_json: return "invalid_json";
    case reason::missing_field: return "missing_field";
    case reason::invalid_trace_id: return "invalid_trace_id";
    case reason::invalid_ts: return "invalid_ts";
    case reason::invalid_kind: return "invalid_kind";
    case reason::invalid_idempotency_key: return "invalid_idempotency_key";
    case reason::invalid_payload: return "invalid_payload";
    case reason::invalid_topic: return "invalid_topic";
    case reason::too_large: return "too_large";
    case reason::db_rejected: return "db_rejected";
    case reason::retries_exhausted: return "retries_exhausted";
    case reason::route_mismatch: return "route_mismatch";
    case reason::schema_violation: return "schema_violation";
    case reason::unknown_schema_version: return "unknown_schema_version";
    case reason::tenant_mismatch: return "tenant_mismatch";
    case reason::invalid_tenant: return "invalid_tenant";
    case reason::max_deliveries: return "max_deliveries";
  }
  return "unknown";
}

namespace {

bool is_hex(char c) noexcept {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Reads exactly n digits at s[pos..]; advances pos.
bool read_digits(std::string_view s, size_t& pos, int n, int& value) noexcept {
  if (pos + n > s.size()) return false;
  value = 0;
  for (int i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (!is_digit(c)) return false;
    value = value * 10 + (c - '0');
  }
  pos += n;
  return true;
}

int days_in_month(int year, int month) noexcept {
  static constexpr int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month == 2) {
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return leap ? 29 : 28;
  }
  return days[month - 1];
}

bool has_nul(std::string_view s) noexcept { return std::memchr(s.data(), 0, s.size()) != nullptr; }

}  // namespace

bool is_pg_uuid(std::string_view s) noexcept {
  // Fast path: the canonical 8-4-4-4-12 form that nearly every producer
  // sends. Every event has a trace_id: a table look-up per digit, no branch
  // per character (a third of the instructions of the loop with is_hex).
  if (s.size() == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-') {
    static constexpr auto hex = [] {
      std::array<uint8_t, 256> t{};
      for (int c = '0'; c <= '9'; ++c) t[c] = 1;
      for (int c = 'a'; c <= 'f'; ++c) t[c] = 1;
      for (int c = 'A'; c <= 'F'; ++c) t[c] = 1;
      return t;
    }();
    const auto* u = reinterpret_cast<const unsigned char*>(s.data());
    unsigned ok = 1;
    for (size_t i = 0; i < 8; ++i) ok &= hex[u[i]];
    for (size_t i = 9; i < 13; ++i) ok &= hex[u[i]];
    for (size_t i = 14; i < 18; ++i) ok &= hex[u[i]];
    for (size_t i = 19; i < 23; ++i) ok &= hex[u[i]];
    for (size_t i = 24; i < 36; ++i) ok &= hex[u[i]];
    return ok != 0;
  }
  // Every other form PostgreSQL accepts; mirrors string_to_uuid() in
  // src/backend/utils/adt/uuid.c.
  size_t pos = 0;
  bool braces = false;
  if (pos < s.size() && s[pos] == '{') {
    braces = true;
    ++pos;
  }
  for (int i = 0; i < 16; ++i) {
    if (pos + 2 > s.size() || !is_hex(s[pos]) || !is_hex(s[pos + 1])) return false;
    pos += 2;
    if (pos < s.size() && s[pos] == '-' && (i % 2) == 1 && i < 15) ++pos;
  }
  if (braces) {
    if (pos >= s.size() || s[pos] != '}') return false;
    ++pos;
  }
  return pos == s.size();
}

bool is_iso8601_datetime(std::string_view s) noexcept {
  size_t p = 0;
  int year, month, day, hour, minute, second = 0;
  if (!read_digits(s, p, 4, year)) return false;
  if (p >= s.size() || s[p++] != '-') return false;
  if (!read_digits(s, p, 2, month) || month < 1 || month > 12) return false;
  if (p >= s.size() || s[p++] != '-') return false;
  if (!read_digits(s, p, 2, day) || day < 1 || day > days_in_month(year, month)) return false;
  if (p >= s.size() || (s[p] != 'T' && s[p] != 't' && s[p] != ' ')) return false;
  ++p;
  if (!read_digits(s, p, 2, hour) || hour > 23) return false;
  if (p >= s.size() || s[p++] != ':') return false;
  if (!read_digits(s, p, 2, minute) || minute > 59) return false;
  if (p < s.size() && s[p] == ':') {
    ++p;
    if (!read_digits(s, p, 2, second) || second > 60) return false;  // 60: leap second
    if (p < s.size() && (s[p] == '.' || s[p] == ',')) {
      ++p;
      size_t start = p;
      while (p < s.size() && is_digit(s[p])) ++p;
      if (p == start) return false;
    }
  }
  if (p == s.size()) return true;  // no offset: read as UTC
  char c = s[p++];
  if (c == 'Z' || c == 'z') return p == s.size();
  if (c != '+' && c != '-') return false;
  int oh, om = 0;
  if (!read_digits(s, p, 2, oh) || oh > 23) return false;
  if (p < s.size()) {
    if (s[p] == ':') ++p;
    if (!read_digits(s, p, 2, om) || om > 59) return false;
  }
  return p == s.size();
}

namespace dom = simdjson::dom;

bool holds_nul(const dom::element& e) {
  switch (e.type()) {
    case dom::element_type::OBJECT:
      for (auto field : dom::object(e)) {
        if (has_nul(field.key) || holds_nul(field.value)) return true;
      }
      return false;
    case dom::element_type::ARRAY:
      for (auto child : dom::array(e)) {
        if (holds_nul(child)) return true;
      }
      return false;
    case dom::element_type::STRING:
      return has_nul(std::string_view(e));
    default:
      return false;
  }
}

struct envelope_validator::impl {
  dom::parser parser;
  std::string padded;  // copy of a line that lacks simdjson's padding
  dom::element doc;    // the last document check_json() accepted
  std::string marked;  // the line with its big numbers marked (stages/big_numbers.h)
  bool marked_numbers = false;  // doc was parsed from `marked`
};

envelope_validator::envelope_validator(envelope_limits limits)
    : limits_(limits), impl_(std::make_unique<impl>()) {
  // Depth counts the event object itself; max_depth counts nesting inside it.
  if (impl_->parser.allocate(64 * 1024, limits_.max_depth + 1) != simdjson::SUCCESS) throw std::bad_alloc();
}
envelope_validator::~envelope_validator() = default;

namespace {

enum field_bit : unsigned {
  f_trace_id = 1,
  f_ts = 2,
  f_kind = 4,
  f_key = 8,
  f_payload = 16,
  f_topic = 32,
};

validation fail(reason r, std::string message) { return validation{r, std::move(message)}; }

// At most n bytes of s, cut at a UTF-8 character boundary (messages are stored
// as text and must stay valid UTF-8).
std::string utf8_prefix(std::string_view s, size_t n) {
  if (s.size() <= n) return std::string(s);
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n)) + "...";
}

}  // namespace

validation envelope_validator::check_json(std::string_view line, size_t capacity, bool big_numbers) {
  impl_->marked_numbers = false;
  if (line.size() > limits_.max_event_bytes) {
    return fail(reason::too_large, "event is " + std::to_string(line.size()) +
                                       " bytes, over the limit of " +
                                       std::to_string(limits_.max_event_bytes));
  }
  if (line.size() >= 3 && line.substr(0, 3) == "\xEF\xBB\xBF") {
    return fail(reason::invalid_json, "not valid JSON: starts with a byte order mark");
  }
  const char* data = line.data();
  if (capacity < line.size() + simdjson::SIMDJSON_PADDING) {
    impl_->padded.assign(line);
    impl_->padded.resize(line.size() + simdjson::SIMDJSON_PADDING, '\0');
    data = impl_->padded.data();
  }

  // A full parse: simdjson validates the whole document (structure, UTF-8,
  // strings and their escapes, numbers, depth) before we look at a field.
  dom::element doc;
  bool marked = false;
  auto err = impl_->parser.parse(data, line.size(), false).get(doc);
  if (err == simdjson::NUMBER_ERROR && big_numbers && mark_big_numbers(line, impl_->marked)) {
    // Only the numbers were beyond the parser: the marked copy stands in.
    const size_t n = impl_->marked.size();
    impl_->marked.resize(n + simdjson::SIMDJSON_PADDING, '\0');
    err = impl_->parser.parse(impl_->marked.data(), n, false).get(doc);
    marked = true;
  }
  if (err) {
    switch (err) {
      case simdjson::DEPTH_ERROR:
        return fail(reason::invalid_json, "not storable JSON: nesting deeper than " +
                                              std::to_string(limits_.max_depth) + " levels");
      case simdjson::NUMBER_ERROR:
        return fail(reason::invalid_json, "not storable JSON: a number is malformed or out of range");
      default:
        return fail(reason::invalid_json, std::string("not valid JSON: ") + simdjson::error_message(err));
    }
  }
  dom::object obj;
  if (doc.get_object().get(obj)) return fail(reason::invalid_json, "an event must be a JSON object");
  // (A marked document held no \u0000: its NULs are the markers.)
  if (!marked && line.find("\\u0000") != std::string_view::npos && holds_nul(doc)) {
    return fail(reason::invalid_json, "not storable JSON: a string or key contains \\u0000, which PostgreSQL jsonb cannot store");
  }
  impl_->doc = doc;
  impl_->marked_numbers = marked;
  return {};
}

simdjson::dom::element envelope_validator::document() const { return impl_->doc; }
const simdjson::dom::document& envelope_validator::parsed() const noexcept { return impl_->parser.doc; }
bool envelope_validator::marked_numbers() const noexcept { return impl_->marked_numbers; }

validation envelope_validator::check(std::string_view line, size_t capacity, envelope& out) {
  out = envelope{};
  if (auto v = check_json(line, capacity); !v.ok()) return v;
  dom::object obj = dom::object(impl_->doc);

  unsigned seen = 0;
  validation field_error;  // the first envelope rule broken, in document order
  auto note = [&](reason r, std::string msg) {
    if (field_error.ok()) field_error = fail(r, std::move(msg));
  };
  auto string_field = [&](dom::element v, std::string_view& dst, const char* name, reason r) {
    if (v.get_string().get(dst)) note(r, std::string(name) + " must be a string");
  };

  for (auto field : obj) {
    std::string_view key = field.key;
    unsigned bit = 0;
    if (key == "trace_id") bit = f_trace_id;
    else if (key == "ts") bit = f_ts;
    else if (key == "kind") bit = f_kind;
    else if (key == "idempotency_key") bit = f_key;
    else if (key == "payload") bit = f_payload;
    else if (key == "topic") bit = f_topic;
    if (bit == 0) continue;
    if (seen & bit) {
      // jsonb keeps the last of duplicate keys; an envelope that says two
      // things about itself is refused rather than guessed at.
      note(reason::invalid_json, "field '" + std::string(key) + "' appears more than once");
      continue;
    }
    seen |= bit;
    switch (bit) {
      case f_trace_id: string_field(field.value, out.trace_id, "trace_id", reason::invalid_trace_id); break;
      case f_ts: string_field(field.value, out.ts, "ts", reason::invalid_ts); break;
      case f_kind: string_field(field.value, out.kind, "kind", reason::invalid_kind); break;
      case f_key: string_field(field.value, out.idempotency_key, "idempotency_key", reason::invalid_idempotency_key); break;
      case f_topic:
        string_field(field.value, out.topic, "topic", reason::invalid_topic);
        out.has_topic = true;
        break;
      case f_payload:
        if (!field.value.is_object()) note(reason::invalid_payload, "payload must be an object");
        break;
    }
  }
  if (!field_error.ok()) return field_error;

  if ((seen & (f_trace_id | f_ts | f_kind | f_key | f_payload)) != (f_trace_id | f_ts | f_kind | f_key | f_payload)) {
    std::string missing;
    auto add = [&](unsigned bit, const char* name) {
      if (!(seen & bit)) missing += (missing.empty() ? "" : ", ") + std::string(name);
    };
    add(f_trace_id, "trace_id");
    add(f_ts, "ts");
    add(f_kind, "kind");
    add(f_key, "idempotency_key");
    add(f_payload, "payload");
    return fail(reason::missing_field, "missing required field(s): " + missing);
  }
  if (!is_pg_uuid(out.trace_id)) {
    return fail(reason::invalid_trace_id, "trace_id is not a UUID: '" + utf8_prefix(out.trace_id, 64) + "'");
  }
  if (!is_iso8601_datetime(out.ts)) {
    return fail(reason::invalid_ts, "ts is not an ISO 8601 date-time: '" + utf8_prefix(out.ts, 64) + "'");
  }
  if (out.kind.empty()) return fail(reason::invalid_kind, "kind must not be empty");
  if (out.idempotency_key.empty()) {
    return fail(reason::invalid_idempotency_key, "idempotency_key must not be empty");
  }
  if (out.idempotency_key.size() > limits_.max_key_bytes) {
    return fail(reason::invalid_idempotency_key,
                "idempotency_key is " + std::to_string(out.idempotency_key.size()) +
                    " bytes, over the limit of " + std::to_string(limits_.max_key_bytes));
  }
  if (out.has_topic && (out.topic.empty() || !fits_varchar(out.topic, limits_.max_topic_chars))) {
    return fail(reason::invalid_topic,
                "topic must be 1 to " + std::to_string(limits_.max_topic_chars) + " characters");
  }
  return {};
}

}  // namespace evpipe::stages
