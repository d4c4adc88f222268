#pragma once
// How evpipe-load speaks to each kind of endpoint. A target URL names the
// protocol; a wire frames events into bytes for one connection and turns the
// endpoint's replies into a cumulative count of acknowledged events (every
// protocol here acknowledges in send order on a connection), and for TCP
// also into the runs of events acknowledged beyond that count.
//
//   tcp://host:port          NDJSON lines; replies {"ack":N} or
//                            {"ack":N,"sack":[[a,b],...]} (lines a to b, from 1)
//   mqtt://host:port         PUBLISH at QoS 1 through a broker; the ack is the
//                            broker's PUBACK (evpipe, subscribed, commits later)
//   mqtt-serve://host:port   evpipe-load plays the broker: evpipe's MQTT source
//                            connects to it, and the ack is evpipe's own PUBACK,
//                            sent after the commit (publish-to-PUBACK latency)
//   http://host:port/path    POST NDJSON batches; the ack is the response
//   nats://host:port         PUB into a JetStream stream; the ack is the
//                            stream's publish ack (evpipe pulls and commits later)
//
// Used by one sender and one receiver thread per connection.

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace evpipe::load {

enum class target_kind : uint8_t { tcp, mqtt, mqtt_serve, http, nats };

struct target {
  target_kind kind = target_kind::tcp;
  std::string host;
  std::string port;
  std::string path = "/v1/events";  // http
  std::string text;                 // as given
};

// Throws std::invalid_argument with the accepted forms.
[[nodiscard]] target parse_target(const std::string& url);

struct wire_options {
  std::string topic = "tracker/events/load";  // MQTT topic of every PUBLISH (NATS: the subject, '/' as '.')
  std::string client_id = "evpipe-load";      // mqtt://: suffixed with the connection number
  std::string bearer_token;                   // http: sent as Authorization: Bearer
  double accept_timeout_s = 30;               // mqtt-serve: how long to wait for evpipe to connect
};

// Opens connection `index` (connecting, or for mqtt-serve accepting evpipe's
// connection) and completes the protocol's handshake. Returns the socket;
// throws std::runtime_error saying what failed.
[[nodiscard]] int open_connection(const target& t, int index, const wire_options& o);

class wire {
 public:
  virtual ~wire() = default;
  // Appends the bytes of event number `idx` (from 0 on this connection).
  virtual void add(uint64_t idx, std::string_view event, std::string& out) = 0;
  // The same on a topic of its own (MQTT: the PUBLISH topic, for `evpipe
  // replay --to mqtt://`, which keeps each event's topic); other wires
  // ignore it.
  virtual void add_on_topic(uint64_t idx, std::string_view topic, std::string_view event, std::string& out) {
    (void)topic;
    add(idx, event, out);
  }
  // Completes a group of added events (an HTTP request); a no-op elsewhere.
  virtual void finish(std::string& out) { (void)out; }
  // Consumes reply bytes from `in` (leaving an incomplete tail); returns the
  // new cumulative acknowledged count. Bytes to send back (PINGRESP) go to
  // `reply`. Throws std::runtime_error when the endpoint refuses events.
  virtual uint64_t on_bytes(std::string& in, uint64_t acked, std::string& reply) = 0;
  // Events acknowledged beyond the cumulative count by the replies the last
  // on_bytes() consumed, as runs [first, last] of event numbers from 0 (TCP's
  // "sack"), appended to `out`; a run may overlap the count.
  virtual void take_selective(std::vector<std::pair<uint64_t, uint64_t>>& out) { (void)out; }
  // The most events that may be unacknowledged at once (MQTT packet ids).
  [[nodiscard]] virtual uint64_t max_in_flight() const { return UINT64_MAX; }
  // Largest group finish() should close (HTTP events per request).
  [[nodiscard]] virtual uint64_t max_group() const { return UINT64_MAX; }
  // Whether a group is sent only once the previous one is acknowledged (HTTP:
  // a connection's requests are answered one after the other, so events that
  // fall due meanwhile are better sent together in the next request).
  [[nodiscard]] virtual bool one_group_at_a_time() const { return false; }
};

[[nodiscard]] std::unique_ptr<wire> make_wire(const target& t, const wire_options& o, uint64_t http_batch);

}  // namespace evpipe::load
