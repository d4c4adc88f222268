#pragma once
// `evpipe replay --to mqtt://` speaks to the broker itself (not through
// load::wire's MQTT 3.1.1 client): MQTT 5 when the broker takes it, so that
// each event's transport headers (events_mirror.headers: content type and
// user properties, docs/mqtt.md) are published again as MQTT 5 properties,
// and MQTT 3.1.1 when the broker refuses 5 (headers cannot travel then: they
// are dropped, and replay says how many events had some). User name and
// password come from a file (--mqtt-credentials-file), never from the
// command line, and are never printed.
//
// Used by the replay's one thread.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "load/wire.h"

namespace simdjson::dom {
class parser;
}

namespace evpipe::read {

struct mqtt_credentials {
  std::string username;
  std::optional<std::string> password;
};

// A credentials file: the user name on the first line, the password on the
// second (none: no password). "" or what is wrong (never the contents).
[[nodiscard]] std::string read_mqtt_credentials(const std::string& path, mqtt_credentials& out);
// A file holding one secret on its first line (a bearer token). "" or what is wrong.
[[nodiscard]] std::string read_secret_file(const std::string& path, std::string& out);

// Connects to the broker and completes CONNECT/CONNACK: MQTT 5 first, 3.1.1
// when the broker refuses that protocol version. Returns the socket and sets
// `protocol_level` (5 or 4); throws std::runtime_error with the broker's
// reason (e.g. "not authorized") when it refuses the connection.
[[nodiscard]] int connect_mqtt_broker(const load::target& t, const std::string& client_id,
                                      const mqtt_credentials* credentials, uint8_t& protocol_level);

// PUBLISH at QoS 1 and the broker's PUBACKs, counted in publish order.
class mqtt_replay_wire final : public load::wire {
 public:
  explicit mqtt_replay_wire(uint8_t protocol_level);
  ~mqtt_replay_wire() override;
  void add(uint64_t idx, std::string_view event, std::string& out) override { add_event(idx, "", event, "", out); }
  void add_on_topic(uint64_t idx, std::string_view topic, std::string_view event, std::string& out) override {
    add_event(idx, topic, event, "", out);
  }
  // One event; `headers` (jsonb's text, "" for none) become its content type
  // and user properties on an MQTT 5 broker.
  void add_event(uint64_t idx, std::string_view topic, std::string_view event, std::string_view headers,
                 std::string& out);
  // Throws std::runtime_error when the broker refuses an event (MQTT 5
  // PUBACK reason >= 0x80) or disconnects.
  uint64_t on_bytes(std::string& in, uint64_t acked, std::string& reply) override;
  // Packet ids must not be reused while unacknowledged.
  [[nodiscard]] uint64_t max_in_flight() const override { return 65000; }
  // Events whose headers a 3.1.1 broker could not be given.
  [[nodiscard]] uint64_t headers_dropped() const { return headers_dropped_; }

 private:
  bool v5_;
  uint64_t headers_dropped_ = 0;
  std::unique_ptr<simdjson::dom::parser> parser_;  // for the headers, reused
};

}  // namespace evpipe::read
