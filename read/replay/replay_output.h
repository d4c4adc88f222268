#pragma once
// Where a replay's events go, and which of them have arrived: stdout counts
// what was written, an evpipe source what it acknowledged.
// The replay prints done_position() as its last position, so a resumed
// replay neither skips nor, beyond what the idempotency keys absorb, repeats.
//
// Owned and used by the replay's one thread.

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "load/wire.h"
#include "read/position.h"
#include "read/replay/replay_mqtt.h"
#include "read/table_reader.h"

namespace evpipe::read {

class replay_output {
 public:
  virtual ~replay_output() = default;
  // One event (the row as read); false when the output failed
  // (last_error() says why).
  [[nodiscard]] virtual bool write(const event_row& r) = 0;
  // Hands what is buffered to the output (before a pause of --rate).
  [[nodiscard]] virtual bool flush() = 0;
  // Flushes and, for a pipeline, waits for the acknowledgements (bounded).
  [[nodiscard]] virtual bool finish() = 0;
  // The last event known to have arrived (nullopt: none yet).
  [[nodiscard]] virtual std::optional<position> done_position() const = 0;
  [[nodiscard]] const std::string& last_error() const { return error_; }
  // A line for stderr at the end when something of the events could not be
  // carried ("" when everything was): headers to an MQTT 3.1.1 broker.
  [[nodiscard]] virtual std::string caveat() const { return ""; }

 protected:
  std::string error_;
};

// NDJSON on stdout: {"position":"…","topic":"…","event":{…}} per line, with
// "headers":{…} after "event" for rows that have transport headers.
[[nodiscard]] std::unique_ptr<replay_output> make_stdout_output();

// Where --to sends events: an evpipe source (load/wire.h's targets).
struct wire_target {
  load::target target;       // tcp://, mqtt:// (through a broker) or http://
  std::string topic_prefix;  // mqtt: put before each event's topic ("" = the topic itself)
  std::optional<mqtt_credentials> mqtt_login;  // mqtt: user name and password (--mqtt-credentials-file)
  std::string bearer_token;                   // http: Authorization: Bearer (--bearer-token-file)
};
// Parses --to tcp://host:port, mqtt://host:port[/topic-prefix] or
// http://host:port/path; "" or what is wrong.
[[nodiscard]] std::string parse_wire_target(const std::string& url, wire_target& out);

// The events themselves to an evpipe source, at most `window`
// unacknowledged, each acknowledged only once it has a committed outcome
// (TCP, HTTP) or the broker holds it (MQTT, QoS 1). TCP and HTTP: the row's
// topic is added as the event's "topic" field when it has none; MQTT: it is
// the PUBLISH topic, and the row's headers its MQTT 5 properties
// (replay_mqtt.h). Headers do not travel over TCP and HTTP (the sources take
// none there). last_error() is set when the connection failed.
[[nodiscard]] std::unique_ptr<replay_output> make_wire_output(const wire_target& to, size_t window);

// The stdout line of one event (exposed for tests).
void append_ndjson_line(std::string& out, const event_row& r);

}  // namespace evpipe::read
