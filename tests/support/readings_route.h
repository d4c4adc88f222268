// The partitioned route the partition tests share: bare device readings on
// the TCP listener's topic ("tracker/events/it") into `readings`, partitioned
// on their own time, and the helpers that send them and name their days.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>

#include "tests/support/harness.h"

namespace evpipe::testing {

// The [[routes]] entry; `also` lets a later route take the message too.
inline std::string readings_route(bool also = false) {
  return std::string(R"(
[[routes]]
name = "readings"
topics = ["tracker/events/it"]
envelope = "none"
table = "readings"
)") + (also ? "also = true\n" : "") +
         R"(partition_by = "measured_at"
idempotency = ["device_id", "measured_at"]
columns = [
  { name = "device_id", type = "text", required = true },
  { name = "value", type = "float8" },
  { name = "measured_at", source = "ts", type = "timestamptz", required = true },
]
)";
}

// The user's table for it, made after migrate as docs/routes.md says.
constexpr const char* readings_partitioned_table =
    "CREATE TABLE readings (device_id text NOT NULL, value float8, measured_at timestamptz NOT NULL) "
    "PARTITION BY RANGE (measured_at)";

// One reading as an NDJSON line; `ts` is ISO 8601 text.
inline std::string reading_line(const std::string& device, const std::string& ts, double value = 1.5) {
  return "{\"device_id\":\"" + device + "\",\"value\":" + std::to_string(value) + ",\"ts\":\"" + ts + "\"}\n";
}

// The timestamptz SQL expression `expr` as ISO 8601 UTC text, to the microsecond.
inline std::string utc_iso(test_db& db, const std::string& expr) {
  return db.column("SELECT to_char((" + expr + ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").at(0);
}

// Its UTC day as YYYYMMDD: the suffix of the partition named after that day.
inline std::string utc_day(test_db& db, const std::string& expr) {
  return db.column("SELECT to_char((" + expr + ") AT TIME ZONE 'UTC', 'YYYYMMDD')").at(0);
}

// Sends NDJSON lines to the TCP listener and waits for an ack of each.
inline void send_acked(uint16_t port, const std::string& data, evpipe_process& evp) {
  using namespace std::chrono_literals;
  const uint64_t n = static_cast<uint64_t>(std::count(data.begin(), data.end(), '\n'));
  ndjson_client producer(port);
  producer.send_all(data);
  ASSERT_EQ(producer.read_acks_until(n, 60s), n) << evp.log();
}

}  // namespace evpipe::testing
