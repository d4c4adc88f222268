// The upsert route the upsert tests share: device status messages (bare
// JSON) on the TCP listener's topic ("tracker/events/it") keep one row per
// device in `devices`, newest `last_seen` wins; a trigger logs every row
// version written to `device_writes`, so a test can count writes.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace evpipe::testing {

inline constexpr const char* device_status_route = R"(
[[routes]]
name = "device_status"
topics = ["tracker/events/it"]
envelope = "none"
table = "devices"
mode = "upsert"
key = ["device_id"]
order_by = "last_seen"
idempotency = ["device_id", "last_seen"]
columns = [
  { name = "device_id", type = "text", required = true },
  { name = "status", type = "text", required = true },
  { name = "last_seen", source = "timestamp", type = "timestamptz", required = true },
  { name = "ip_address", type = "text" },
]
)";

// The route's table and the write log, for the test's schema.
inline constexpr const char* device_status_tables = R"(
CREATE TABLE devices (device_id text PRIMARY KEY, status text NOT NULL, last_seen timestamptz, ip_address text);
CREATE TABLE device_writes (device_id text, status text);
CREATE FUNCTION log_device_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO device_writes VALUES (NEW.device_id, NEW.status); RETURN NULL; END $$;
CREATE TRIGGER log_device_write AFTER INSERT OR UPDATE ON devices FOR EACH ROW EXECUTE FUNCTION log_device_write();
)";

// Device `device`'s status at second `t` of 10:00 (status "s<t>", an address
// that says both).
inline std::string device_status(int device, int t) {
  char ts[32];
  std::snprintf(ts, sizeof ts, "2025-01-28T10:%02d:%02dZ", t / 60, t % 60);
  return "{\"device_id\":\"dev-" + std::to_string(device) + "\",\"status\":\"s" + std::to_string(t) +
         "\",\"ip_address\":\"10.0." + std::to_string(device) + "." + std::to_string(t) + "\",\"timestamp\":\"" + ts +
         "\"}";
}

// Every status of `devices` devices at seconds 1 to `times`, device by device.
inline std::vector<std::string> device_status_lines(int devices, int times) {
  std::vector<std::string> lines;
  for (int d = 0; d < devices; ++d) {
    for (int s = 1; s <= times; ++s) lines.push_back(device_status(d, s));
  }
  return lines;
}

}  // namespace evpipe::testing
