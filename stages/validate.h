#pragma once
// Envelope parsing and validation: the first stage an event meets.
//
// An event is one JSON object carrying trace_id, ts, kind, idempotency_key and
// payload (schemas/envelope.md has the rules). Every value of the document
// must be checked, so that a row that passes here is never rejected by
// PostgreSQL for its JSON; for that whole-document case simdjson's DOM parser
// is 2.6x faster than walking the document with its on-demand API
// (bench/stages_bench: BM_Validate vs BM_DomParseBaseline, measured before the
// switch), so the validator parses with DOM and then reads the envelope fields.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "stages/event.h"

namespace simdjson::dom {
class element;
class document;
}

namespace evpipe::stages {

// Whether a parsed JSON value holds U+0000 anywhere, keys included.
// PostgreSQL's jsonb cannot store it, and JSON can only carry it as the
// escape \u0000, so callers walk the tree only when that escape is in the text.
[[nodiscard]] bool holds_nul(const simdjson::dom::element& e);

// Characters (code points) in UTF-8 text, the unit of VARCHAR(n): every byte
// that does not continue a sequence starts one.
[[nodiscard]] inline size_t utf8_chars(std::string_view s) noexcept {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Whether `s` fits a VARCHAR(max_chars) column; the byte count settles most.
[[nodiscard]] inline bool fits_varchar(std::string_view s, size_t max_chars) noexcept {
  return s.size() <= max_chars || utf8_chars(s) <= max_chars;
}

// The longest prefix of `s` with at most max_chars characters, cut between
// characters.
[[nodiscard]] inline std::string_view varchar_prefix(std::string_view s, size_t max_chars) noexcept {
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && chars++ == max_chars) return s.substr(0, i);
  }
  return s;
}

struct envelope_limits {
  size_t max_event_bytes = 1 << 20;  // whole line
  size_t max_key_bytes = 255;        // idempotency_key, in bytes
  size_t max_topic_chars = 255;      // events_mirror.topic is VARCHAR(255): characters, not bytes
  uint32_t max_depth = 64;           // JSON nesting
};

// The fields of a valid envelope. Views point into the validator's scratch
// space and live until its next call.
struct envelope {
  std::string_view trace_id;
  std::string_view ts;
  std::string_view kind;
  std::string_view idempotency_key;
  std::string_view topic;  // empty when the event has no `topic` field
  bool has_topic = false;
};

struct validation {
  reason why = reason::none;
  std::string message;  // set only when why != none
  [[nodiscard]] bool ok() const noexcept { return why == reason::none; }
};

// Per-thread parsing state (simdjson parser and buffers). Not thread-safe:
// each source thread owns one.
class envelope_validator {
 public:
  explicit envelope_validator(envelope_limits limits = {});
  ~envelope_validator();
  envelope_validator(const envelope_validator&) = delete;
  envelope_validator& operator=(const envelope_validator&) = delete;

  // Validates one event. `capacity` is how many bytes are readable from
  // `line.data()` (simdjson reads up to 64 bytes past the end of the input);
  // when it is smaller than line.size() + 64 the line is copied first.
  [[nodiscard]] validation check(std::string_view line, size_t capacity, envelope& out);
  [[nodiscard]] validation check(std::string_view line, envelope& out) {
    return check(line, line.size(), out);
  }

  // Only the whole-document rules (valid JSON, an object, storable as
  // jsonb, size and depth): for messages a route takes without an envelope.
  // With `big_numbers`, numbers beyond 64-bit integers or a double are
  // accepted (jsonb stores them): the document is then parsed from a marked
  // copy (stages/big_numbers.h) and marked_numbers() says so.
  [[nodiscard]] validation check_json(std::string_view line, size_t capacity, bool big_numbers = false);
  // The document the last check() or check_json() accepted, until the next
  // call: routes extract their columns from it instead of parsing again.
  [[nodiscard]] simdjson::dom::element document() const;
  // The same document whole, for readers of its tape (the payload schema
  // walker, stages/schema/tape.h); valid as long as document().
  [[nodiscard]] const simdjson::dom::document& parsed() const noexcept;
  // Whether document() holds marker strings for numbers beyond the parser.
  [[nodiscard]] bool marked_numbers() const noexcept;

  [[nodiscard]] const envelope_limits& limits() const noexcept { return limits_; }

 private:
  struct impl;
  envelope_limits limits_;
  std::unique_ptr<impl> impl_;
};

// Field rules, exposed for tests and for other sources.
// A UUID as PostgreSQL's uuid_in accepts it: 32 hex digits, optional braces,
// a hyphen allowed after any group of four digits.
[[nodiscard]] bool is_pg_uuid(std::string_view s) noexcept;
// RFC 3339 / ISO 8601 date-time: YYYY-MM-DD[T ]HH:MM[:SS[.frac]][Z|±HH[:MM]];
// no offset means UTC. Checks calendar ranges (leap years, day of month).
[[nodiscard]] bool is_iso8601_datetime(std::string_view s) noexcept;

}  // namespace evpipe::stages
