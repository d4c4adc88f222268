#pragma once
// Route extraction: the stage that turns routed messages into rows of typed
// tables, each row already a binary COPY tuple for the route's columns.
//
// The stage (route_stage) is immutable and shared; the per-thread state (a
// JSON parser and its buffer) lives in a route_scratch owned by the calling
// shard or source thread. Errors are values: each message gets an
// extract_status, and a message that does not fit its route names the route,
// the column and the source in its message. Nothing here allocates per
// message on the success path except jsonb columns of a nested value.

#include <simdjson.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stages/route/route_set.h"

namespace evpipe::stages::route {

// What happened to one message on one route.
enum class extract_status : uint8_t {
  ok,            // a row was appended
  invalid_json,  // the message is not JSON (dead letter: invalid_json)
  missing,       // a required column's source is absent or null (route_mismatch)
  wrong_type,    // a value of another JSON type than the column needs, or the message is not an object (route_mismatch)
  out_of_range,  // right type, but the column cannot hold it: int overflow, a bad date, U+0000 in text (route_mismatch)
};

[[nodiscard]] std::string_view extract_status_name(extract_status s) noexcept;

// One message as a route sees it.
struct message_view {
  std::string_view bytes;        // the message as received (valid JSON when it reaches extract_row)
  std::string_view topic;        // its topic (topic[N], topic)
  int64_t received_unix_us = 0;  // received_at
  // The parsed document holds marker strings for numbers beyond int64 or a
  // double (stages/big_numbers.h), read here as those numbers.
  bool marked_numbers = false;
};

struct extract_error {
  extract_status status = extract_status::ok;
  uint16_t column = 0;  // index into the route's columns
  std::string message;  // 'route "r": column "c" (source "p"): ...'
};

// Appends one COPY tuple (field count, then each field) for `route` to
// `out`; on failure appends nothing and fills `err`. With `identity` set, it
// receives the route's idempotency columns' encoded values (length-prefixed,
// after the route's name): equal for two messages the route calls the same.
[[nodiscard]] extract_status extract_row(const compiled_route& route, simdjson::dom::element root,
                                         const message_view& m, std::string& out, extract_error* err,
                                         std::string* identity = nullptr);

// Appends the fields at `columns` (positions, ascending) of one COPY tuple
// (field count, then each field, as extract_row writes it) to `out`, each
// with its length prefix: equal for two tuples with equal values there.
void append_fields(std::string_view tuple, std::span<const uint16_t> columns, std::string& out);

// Per-thread state of the stage; owned by one thread, not thread-safe.
struct route_scratch {
  simdjson::dom::parser parser;
  std::string padded;  // the message with simdjson's padding
  std::string marked;  // the message with its big numbers marked
};

// One message of a batch and the route that took it.
struct routed_message {
  message_view msg;
  uint16_t route = 0;
};

// The rows a batch produced for one route: a COPY tuple stream without
// header or trailer (stages::copy_format adds them) and how many tuples.
struct route_rows {
  std::string tuples;
  uint32_t count = 0;
  void clear() {
    tuples.clear();
    count = 0;
  }
};

class route_stage {
 public:
  explicit route_stage(const route_set& routes) : routes_(routes) {}

  // Extracts every message of `in` into rows[message.route]; results[i] is
  // message i's status (errors carry their message). `rows` has one entry
  // per route; `results` is resized to in.size().
  void extract_batch(std::span<const routed_message> in, route_scratch& scratch, std::span<route_rows> rows,
                     std::vector<extract_error>& results) const;

  [[nodiscard]] const route_set& routes() const noexcept { return routes_; }

 private:
  const route_set& routes_;
};

}  // namespace evpipe::stages::route
