#pragma once
// The [[routes]] sections: which messages go into which typed table, how each
// column is taken from the message, and how rows are written (append or
// upsert). Parsed once by config/route_sections.cc; compiled for the hot path
// by stages/route/route_set. docs/routes.md is the reference.

#include <cstdint>
#include <string>
#include <vector>

namespace evpipe::config {

// The PostgreSQL types a routed column can have (binary COPY encodes each).
enum class column_type : uint8_t { text, int4, int8, float8, boolean, timestamptz, uuid, jsonb };

// Where a column's value comes from.
enum class column_source : uint8_t {
  json_path,      // a dotted path into the message: "payload.temperature", "temperature", "readings[0]"
  topic_segment,  // topic[N]: the N-th level of the topic, from 0
  topic,          // the whole topic
  received_at,    // when evpipe received the message (timestamptz)
  message,        // the whole message (jsonb)
};

struct route_column {
  std::string name;                // the table's column
  std::string source_text;         // as written in the config ("payload.temperature", "topic[1]", ...)
  column_source source = column_source::json_path;
  std::vector<std::string> path;   // json_path: object keys; an array index is written "[N]" as its own element
  uint32_t segment = 0;            // topic_segment: N
  column_type type = column_type::text;
  bool required = false;           // absent or null: the message is dead-lettered as route_mismatch
  bool has_default = false;        // absent or null: this value instead of NULL
  std::string default_text;        // the default, as text the column type parses (config checked it)
  bool operator==(const route_column&) const = default;
};

// One [[routes]] section.
struct route {
  std::string name;                      // names the route in messages and metrics; default "route N"
  std::vector<std::string> topics;       // MQTT topic filters ('+', '#'); [] = any topic
  std::vector<std::string> kinds;        // envelope kinds (envelope "standard" only); [] = any kind
  bool also = false;                     // after a match, keep looking: later routes may take the message too
  bool envelope_standard = true;         // "standard": the rules of schemas/envelope.md; "none": any JSON object
  std::string table;                     // [schema.]table, lowercase identifiers
  std::vector<route_column> columns;
  bool upsert = false;                   // mode: "append" (binary COPY) or "upsert" (latest state by key)
  std::vector<std::string> key;          // upsert: the columns of the table's unique key
  std::string order_by;                  // upsert: a column; an older value never overwrites a newer one ("" = last wins)
  std::vector<std::string> idempotency;  // columns that identify a message (envelope "none")
  bool idempotency_digest = false;       // idempotency = "digest": XXH3-128 of the message's topic and bytes
  bool mirror = false;                   // also keep the events_mirror row (envelope "standard" only)
  std::string partition_by;              // append: the table's range partition key, a timestamptz column whose
                                         // partitions evpipe keeps ([storage] partition); "" = none (docs/partitions.md)
  bool operator==(const route&) const = default;  // a reload publishes new routes only when they changed

  [[nodiscard]] const route_column* column(const std::string& n) const {
    for (const auto& c : columns) {
      if (c.name == n) return &c;
    }
    return nullptr;
  }
};

[[nodiscard]] const char* column_type_name(column_type t) noexcept;

}  // namespace evpipe::config
