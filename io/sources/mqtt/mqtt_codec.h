#pragma once
// MQTT 3.1.1 packet codec: bytes to packets and back, nothing else (no
// sockets, no session state). The MQTT source (issue 3) builds its session on
// it; it is separate so that every packet can be tested byte for byte and
// fuzzed. Decoding never throws and never reads past the buffer: malformed
// input is an error value.
//
// Covers what evpipe's client needs: CONNECT/CONNACK, SUBSCRIBE/SUBACK,
// PUBLISH at QoS 0, 1 and 2 both ways, PUBACK, PUBREC/PUBREL/PUBCOMP,
// PINGREQ/PINGRESP, DISCONNECT, UNSUBSCRIBE/UNSUBACK. MQTT 5's packets are in
// mqtt_codec_v5.h, which shares read_frame and the packet structs.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace evpipe::io::mqtt {

enum class packet_type : uint8_t {
  connect = 1, connack = 2, publish = 3, puback = 4, pubrec = 5, pubrel = 6, pubcomp = 7,
  subscribe = 8, suback = 9, unsubscribe = 10, unsuback = 11, pingreq = 12, pingresp = 13, disconnect = 14,
};

enum class decode_status : uint8_t {
  ok,
  need_more,    // the buffer holds only part of a packet
  malformed,    // the bytes break the specification: close the connection
  too_large,    // the packet is larger than the caller's limit
  unsupported,  // valid MQTT, but not what this codec handles (wills)
};

// The largest remaining length MQTT can express (four length bytes).
inline constexpr uint32_t max_remaining_length = 268'435'455;

struct connect_packet {
  std::string client_id;
  bool clean_session = true;
  uint16_t keepalive_s = 60;
  std::optional<std::string> username;
  std::optional<std::string> password;
};

struct connack_packet {
  bool session_present = false;
  uint8_t return_code = 0;  // 0 accepted; 1-5 refused (version, id, unavailable, credentials, not authorized)
};

struct publish_packet {
  std::string_view topic;    // views into the decoded buffer
  std::string_view payload;
  uint8_t qos = 0;
  bool dup = false;
  bool retain = false;
  uint16_t packet_id = 0;    // QoS 1 and 2 only
};

struct subscribe_packet {
  uint16_t packet_id = 0;
  std::vector<std::pair<std::string, uint8_t>> filters;  // (topic filter, requested QoS)
};

struct suback_packet {
  uint16_t packet_id = 0;
  std::vector<uint8_t> return_codes;  // granted QoS 0-2, or 0x80 failure
};

// UNSUBSCRIBE: filters a persistent session should no longer deliver
// (defect 4 of issue 9). Its UNSUBACK is a packet id only (parse_packet_id).
struct unsubscribe_packet {
  uint16_t packet_id = 0;
  std::vector<std::string> filters;
};

// One packet framed out of a byte stream.
struct frame {
  packet_type type = packet_type::connect;
  uint8_t flags = 0;       // low nibble of the first byte
  std::string_view body;   // variable header + payload
  size_t size = 0;         // bytes of the whole packet (to consume)
};

// Frames the packet at the start of `buf`. Checks the fixed header: a known
// type, the flags the specification requires, a remaining length of at most
// four bytes, and the caller's size limit. On too_large, `out` holds the
// type, flags and whole size (body empty), so the caller can skip the packet.
[[nodiscard]] decode_status read_frame(std::string_view buf, size_t max_packet, frame& out) noexcept;

[[nodiscard]] decode_status parse_connect(const frame& f, connect_packet& out);
[[nodiscard]] decode_status parse_connack(const frame& f, connack_packet& out) noexcept;
[[nodiscard]] decode_status parse_publish(const frame& f, publish_packet& out) noexcept;
// PUBACK, PUBREC, PUBREL, PUBCOMP: a packet id and nothing else.
[[nodiscard]] decode_status parse_packet_id(const frame& f, uint16_t& id) noexcept;
[[nodiscard]] decode_status parse_subscribe(const frame& f, subscribe_packet& out);
[[nodiscard]] decode_status parse_suback(const frame& f, suback_packet& out);
[[nodiscard]] decode_status parse_unsubscribe(const frame& f, unsubscribe_packet& out);

// Encoders append one packet to `out`.
void encode_remaining_length(std::string& out, uint32_t n);
void encode_connect(std::string& out, const connect_packet& p);
void encode_connack(std::string& out, const connack_packet& p);
void encode_publish(std::string& out, const publish_packet& p);
void encode_puback(std::string& out, uint16_t packet_id);
void encode_pubrec(std::string& out, uint16_t packet_id);   // QoS 2, step 1 of the receiver
void encode_pubrel(std::string& out, uint16_t packet_id);   // QoS 2, the sender's answer (flags 0010)
void encode_pubcomp(std::string& out, uint16_t packet_id);  // QoS 2, the receiver's last word
void encode_subscribe(std::string& out, const subscribe_packet& p);
void encode_suback(std::string& out, const suback_packet& p);
void encode_unsubscribe(std::string& out, const unsubscribe_packet& p);
void encode_unsuback(std::string& out, uint16_t packet_id);
void encode_pingreq(std::string& out);
void encode_pingresp(std::string& out);
void encode_disconnect(std::string& out);

// Topic names (PUBLISH) and filters (SUBSCRIBE) as the specification allows
// them: 1 to 65535 bytes of UTF-8 without U+0000; a name without wildcards; a
// filter with '+' and '#' only as whole levels, '#' only last.
[[nodiscard]] bool valid_topic_name(std::string_view s) noexcept;
[[nodiscard]] bool valid_topic_filter(std::string_view s) noexcept;

// Whether a subscription to `filter` can deliver some topic that starts with
// `prefix` (a topic name prefix, no wildcards): "tracker/#" and "+/dlq/x" can
// reach "tracker/dlq/...", "tracker/events/#" cannot. Used to warn when a
// source would receive its own dead-letter republishes.
[[nodiscard]] bool filter_can_match_prefix(std::string_view filter, std::string_view prefix) noexcept;

}  // namespace evpipe::io::mqtt
