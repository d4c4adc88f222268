#pragma once
// One network connection of an MQTT session (io/sources/mqtt): the handshake,
// the subscriptions, reading PUBLISHes into the pipeline, PUBACKs after
// commit, the keep alive. Private to this folder: mqtt_source.cc drives it.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "config/config.h"
#include "io/sources/mqtt/mqtt_codec.h"
#include "io/sources/mqtt/mqtt_codec_v5.h"
#include "io/sources/mqtt/mqtt_stream.h"
#include "io/sources/mqtt/mqtt_subscription_memory.h"
#include "pipeline/ack_tracker.h"
#include "pipeline/intake.h"
#include "pipeline/metrics.h"
#include "pipeline/router.h"
#include "stages/event.h"
#include "stages/validate.h"

namespace evpipe::stages::tenant {
class binding;
}

namespace evpipe::io {

// What every connection of one source shares; owned by the source.
struct mqtt_shared {
  const config::mqtt_source& cfg;
  pipeline::router& router;
  pipeline::source_probe& probe;
  stages::envelope_limits limits;
  std::atomic<int>& reading;  // connections reading, for shutdown
  boost::asio::ssl::context* tls;  // null for mqtt://
  mqtt_subscription_memory* memory = nullptr;  // what each client id subscribed; null = not remembered
  std::shared_ptr<const stages::tenant::binding> tenancy;  // null: tenancy off (docs/tenants.md)
};

// How a connection ended.
enum class link_end : uint8_t {
  unreachable,  // no TCP/TLS connection, or no CONNACK in time
  refused,      // CONNACK with a non-zero return code
  lost,         // was connected, then the connection failed
  closed_by_broker,  // was connected, then the broker closed it without a word (a takeover by another
                     // client with the same id looks like this)
  violation,    // the broker broke the protocol (a malformed or unexpected packet, a bad CONNACK)
  stopped,      // stop_reading(): reading ended on purpose
};

// What a session keeps across its connections, on the session's strand.
struct mqtt_session_state {
  // QoS 2 packet ids whose PUBREC was sent and whose PUBREL has not come: a
  // PUBLISH redelivered with one of them is answered with PUBREC again and
  // not stored twice (MQTT 3.1.1 section 4.3.3, method B).
  std::unordered_set<uint16_t> awaiting_pubrel;
  // Filters of the last SUBACK that were refused (0x80) or granted only QoS 0
  // where more was asked.
  int degraded_filters = 0;
  // Messages on topics no configured filter matches (an old subscription of
  // the persistent session) were reported once.
  bool told_unwanted = false;
  // Filters the last SUBACK refused or granted below the asked QoS.
  int suback_degraded = 0;
  // shared_group: the probe published after SUBACK did not come back through
  // the shared filter (the broker binds "$share/..." literally, as aedes and
  // RabbitMQ 3.10 do): every filter delivers nothing. Read by readiness.
  std::atomic<bool> shared_silent{false};
};


// One network connection of a session: handshake, subscriptions, reading,
// PUBACKs, keepalive. It is the event_origin of the messages it read: their
// outcomes come back here, and once it is closed they are ignored (the broker
// redelivers what was never acknowledged to the next connection).
//
// Owned by its session (and by the batches still carrying its events); runs
// on the session's strand; on_outcomes is the only entry from other threads.
class mqtt_link final : public stages::event_origin, public std::enable_shared_from_this<mqtt_link> {
 public:
  using connected_fn = std::function<void(bool session_present)>;

  mqtt_link(boost::asio::strand<boost::asio::io_context::executor_type> strand, const mqtt_shared& shared, std::string client_id,
            mqtt_session_state& state, connected_fn on_connected);

  ~mqtt_link() override = default;

  // Connects, subscribes and reads until the connection ends or reading stops.
  boost::asio::awaitable<link_end> run(std::string& why);

  [[nodiscard]] bool session_present() const noexcept { return session_present_; }
  [[nodiscard]] bool closed() const noexcept { return closed_; }
  // When CONNACK came (meaningful once connected).
  [[nodiscard]] std::chrono::steady_clock::time_point connected_at() const noexcept { return connected_at_; }


  // From shard threads: the outcomes are committed; acknowledge on the strand.
  void on_outcomes(std::span<const stages::outcome> outcomes) override {
    std::vector<stages::outcome> copy(outcomes.begin(), outcomes.end());
    boost::asio::post(strand_, [self = shared_from_this(), copy = std::move(copy)] { self->acknowledge(copy); });
  }

  // On the strand.
  void stop_reading();

  // On the strand: close now, acknowledged or not (what is unacknowledged is
  // redelivered by the broker).
  void close() {
    stopping_ = true;
    writing_ = false;  // a pending write completes with an error; do not wait
    shut();
  }

 private:
  // One message read and not yet acknowledged, in arrival order.
  struct inflight {
    uint16_t packet_id = 0;           // 0 for QoS 0: nothing to acknowledge
    uint8_t qos = 0;                  // 1: PUBACK; 2: PUBREC (then PUBREL from the broker, PUBCOMP from us)
    bool dead_lettered = false;       // set from its outcome (dlq_publish only)
    stages::reason why = stages::reason::none;
    std::string topic, payload;       // kept only with dlq_publish
    std::string properties_json;      // MQTT 5 content type and user properties, with dlq_publish
  };

  boost::asio::awaitable<bool> connect(std::string& why);

  // MQTT 5 (protocol = "5"), in mqtt_link_v5.cc.
  void encode_connect_v5();
  // CONNACK: accepted (true), or refused / malformed with `why` set.
  bool accept_connack_v5(const mqtt::frame& f, std::string& why);
  // A PUBLISH the broker may send us: no topic alias (we allow none), within
  // our Receive Maximum. Keeps its properties for a dead letter.
  bool check_publish_v5(const mqtt::publish_packet& p, std::string& why);
  // tenant_property: the message's tenant credential from its user properties.
  void take_tenant_property(const mqtt::v5::properties& props);
  // The same for a message too large to hold, from its properties at
  // `props_at` of `avail` (the property length); false, with `why`, when malformed.
  bool tenant_of_oversized_v5(std::string_view avail, size_t props_at, std::string& why);
  // DISCONNECT from the broker: how the link ends.
  link_end broker_disconnect_v5(const mqtt::frame& f, std::string& why);

  void subscribe();

  boost::asio::awaitable<link_end> read_loop(std::string& why);

  // Handles every complete packet in the buffer; a value ends the connection.
  std::optional<link_end> process_buffer(std::string& why);

  uint64_t take_seq(uint16_t packet_id, uint8_t qos, std::string_view topic, std::string_view payload);

  // A message that is acknowledged without entering the pipeline (our own
  // dead-letter republish coming back, a QoS 2 redelivery already answered):
  // done at once, its acknowledgement still leaves in arrival order.
  void pass_through(uint16_t packet_id, uint8_t qos);

  // A PUBLISH over the size limit is skipped as it streams in, keeping a
  // prefix and a digest, and dead-lettered as too_large: acknowledging it
  // (after the dead letter commits) stops the broker from redelivering it.
  bool start_skip(const mqtt::frame& f, std::string_view avail, std::string& why);

  // Consumes what is buffered of the skipped packet; false when it needs more.
  bool skip_some();

  void report_suback(const mqtt::suback_packet& s);

  // The filter as subscribed on the wire ($share/<group>/ prepended).
  [[nodiscard]] std::string wire_filter(const std::string& f) const;
  // Asks the subscription memory what this client id subscribed before;
  // unsubscribe_removed() UNSUBSCRIBEs what the config no longer has.
  void recall_removed_filters();
  void unsubscribe_removed(const std::vector<mqtt_subscription_memory::filter_row>& remembered);
  void report_unsuback(uint16_t id);
  // shared_group (defect 5 of issue 9): brokers without shared subscriptions
  // accept "$share/<group>/<filter>" and deliver nothing. After SUBACK the
  // link publishes one QoS 1 message to evpipe/probe/<client id>, which only
  // its own shared subscription "$share/<group>/evpipe/probe/<client id>"
  // matches; if neither it nor any message on a configured filter arrives
  // within shared_probe_timeout, the subscriptions count as degraded.
  [[nodiscard]] std::string probe_topic() const;
  void start_shared_probe();
  void shared_probe_expired();
  void shared_probe_answered();
  // Publishes state_'s degraded filters into the source's gauge.
  void update_degraded();
  static constexpr std::chrono::seconds shared_probe_timeout{5};

  // Whether some configured filter matches `topic`: a message that matches
  // none came from a subscription the session kept from an older config.
  [[nodiscard]] bool wanted_topic(std::string_view topic) const noexcept;

  void submit();

  // Moves unread bytes to the front, and grows the buffer when a packet
  // larger than it is coming.
  void make_room();
  [[nodiscard]] size_t capacity() const noexcept;
  // A PUBLISH carries the event, its topic (up to 64 KiB) and a few bytes.
  [[nodiscard]] static size_t max_packet_for(const stages::envelope_limits& limits) noexcept {
    return size_t{limits.max_event_bytes} + 65536 + 16;
  }
  // Unacknowledged messages past which the link stops reading. At 3.1.1,
  // max_inflight. At MQTT 5 the broker holds QoS 1 and 2 back at our Receive
  // Maximum (= max_inflight), so this bound only has to catch QoS 0 floods
  // and lets a broker that exceeds the Receive Maximum be seen: twice that,
  // the ack tracker's capacity.
  [[nodiscard]] size_t read_limit() const noexcept {
    return v5_ ? size_t{2} * sh_.cfg.max_inflight : size_t{sh_.cfg.max_inflight};
  }

  void acknowledge(const std::vector<stages::outcome>& outcomes);

  // Writes the acknowledgements of every message now done in arrival order.
  void release();

  // Republishes a committed dead letter, as the TaylorDash DLQ topic format
  // has it. Best effort: the dlq_events row is the record.
  void publish_dead_letter(const inflight& m);

  uint16_t next_packet_id() {
    if (++packet_id_ == 0) packet_id_ = 1;
    return packet_id_;
  }

  // One write at a time; what is queued meanwhile goes out in the next.
  void flush();

  // Sends PINGREQ when the link has been quiet for half the keep alive, and
  // declares the broker gone when no PINGRESP came within the keep alive
  // while we were reading.
  boost::asio::awaitable<void> keepalive_loop(std::shared_ptr<mqtt_link> self);

  // After stop_reading: once every message read is acknowledged, say goodbye.
  void finish_if_done();

  void shut();

  struct xxh3_state {
    XXH3_state_t* st = XXH3_createState();
    ~xxh3_state() { XXH3_freeState(st); }
    XXH3_state_t* get() const { return st; }
  };
  struct skipping {
    // User-provided: clang decides std::optional<skipping>::emplace() is not
    // viable for an aggregate nested in a class still being defined.
    skipping() {}
    uint64_t seq = 0;
    std::string topic, prefix;
    size_t left = 0, payload_size = 0;
    int64_t received = 0;
    xxh3_state state;
  };
  static constexpr size_t too_large_prefix = pipeline::intake::too_large_prefix;

  connected_fn on_connected_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  const mqtt_shared& sh_;
  const std::string client_id_;
  mqtt_session_state& state_;
  mqtt_stream stream_;
  boost::asio::steady_timer wake_;             // backpressure waits
  bool waiting_for_room_ = false;              // a room_waiter() is with the router and has not run yet
  // What router::wait_for_room runs, on a shard thread, once there is room:
  // ends this link's wait on its strand.
  pipeline::room_bell::waiter room_waiter();
  boost::asio::steady_timer keepalive_timer_;
  boost::asio::steady_timer probe_timer_;      // shared_group probe deadline
  pipeline::ack_tracker tracker_;
  pipeline::intake intake_;
  // Over its tenant's quota (docs/tenants.md): the read loop waits as for
  // backpressure until the tenant is back within it; other links read on.
  [[nodiscard]] bool over_quota() {
    if (int64_t over = intake_.take_throttle_ns(); over > 0) {
      quota_until_ns_ = pipeline::steady_now_ns() + over;
      sh_.probe.note_tenant_throttled(intake_.throttled_tenant());
    }
    return quota_until_ns_ > 0 && quota_until_ns_ > pipeline::steady_now_ns();
  }
  int64_t quota_until_ns_ = 0;
  // The last cycle took the tenant over its quota: the next ones take at
  // most this many messages each.
  bool throttled_ = false;
  static constexpr size_t throttled_publishes = 16;
  std::deque<inflight> inflight_;       // read, not yet acknowledged, in arrival order
  // [events] limits, followed at each read (a reload may change them).
  stages::envelope_limits limits_;
  pipeline::limits_follower limits_follower_;
  size_t max_packet_;                   // from limits_.max_event_bytes
  const bool v5_;                       // protocol = "5"
  uint32_t keepalive_s_;                // ours, or the broker's Server Keep Alive (MQTT 5) when shorter and not 0
  uint16_t receive_maximum_ = 65535;    // MQTT 5: what we told the broker
  size_t qos_unacked_ = 0;              // QoS 1 and 2 messages read and not yet acknowledged
  mqtt::v5::properties props_;          // of the packet being handled (views into buf_)
  std::string properties_json_;         // of the PUBLISH being taken (MQTT 5): its event's headers, and its dead letter's
  std::vector<char> buf_;               // received bytes [begin_, end_), then simdjson padding
  size_t begin_ = 0, end_ = 0;
  std::optional<skipping> skip_;
  std::string pending_, writing_buf_;   // packets to write; the write in progress
  size_t pending_pubacks_ = 0;
  uint16_t packet_id_ = 0;
  uint16_t subscribe_id_ = 0;
  uint16_t unsubscribe_id_ = 0;
  std::vector<std::string> unsubscribing_;  // filters of the UNSUBSCRIBE in flight
  std::chrono::steady_clock::time_point last_write_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point ping_sent_{};
  std::chrono::steady_clock::time_point connected_at_{};
  std::string dead_reason_;
  bool ping_outstanding_ = false;
  bool probe_waiting_ = false;    // the shared_group probe is out
  bool shared_evidence_ = false;  // a message on a configured filter came while it was out
  bool held_ = false;  // buffered bytes wait for in-flight room
  bool connect_done_ = false;
  bool connect_timed_out_ = false;
  bool connack_refused_ = false;
  bool bad_connack_ = false;  // the broker's first packet broke the protocol
  bool session_present_ = false;
  bool connected_ = false;
  bool subscribed_ = false;  // our SUBSCRIBE's SUBACK came back on this connection
  bool reading_ = false;
  bool writing_ = false;
  pipeline::pause_timer pause_;  // the read loop waits for room (backpressure)
  bool stopping_ = false;
  bool closed_ = false;
  bool sent_disconnect_ = false;
};

}  // namespace evpipe::io
