#pragma once
// MQTT 5 packets: the parts that differ from 3.1.1 (mqtt_codec.h), i.e.
// variable byte integers, properties, reason codes, and the packets that
// carry them. Bytes to packets and back, nothing else; framing (read_frame),
// topic rules and the packet structs are shared with 3.1.1. Decoding never
// throws and never reads past the buffer: malformed input (an unknown
// property, a property twice that may appear once, a value out of range, a
// string that is not UTF-8) is decode_status::malformed.
//
// Decoded strings are views into the frame's bytes: valid while they are.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/sources/mqtt/mqtt_codec.h"

namespace evpipe::io::mqtt::v5 {

inline constexpr uint8_t protocol_level = 5;

// The properties of MQTT 5 section 2.2.2.2 that a client meets. One struct for
// every packet: each packet allows a subset, and a property a packet does
// not allow is malformed (checked by the packet parsers).
struct properties {
  std::optional<uint8_t> payload_format;         // 0x01: 0 bytes, 1 UTF-8
  std::optional<uint32_t> message_expiry;        // 0x02
  std::optional<std::string_view> content_type;  // 0x03
  std::optional<std::string_view> response_topic;    // 0x08
  std::optional<std::string_view> correlation_data;  // 0x09 (binary)
  std::vector<uint32_t> subscription_ids;        // 0x0B (variable byte integer, 1..268435455; may repeat)
  std::optional<uint32_t> session_expiry;        // 0x11
  std::optional<std::string_view> assigned_client_id;  // 0x12
  std::optional<uint16_t> server_keep_alive;     // 0x13
  std::optional<std::string_view> auth_method;   // 0x15
  std::optional<std::string_view> auth_data;     // 0x16 (binary)
  std::optional<uint8_t> request_problem_info;   // 0x17
  std::optional<uint32_t> will_delay;            // 0x18
  std::optional<uint8_t> request_response_info;  // 0x19
  std::optional<std::string_view> response_info;     // 0x1A
  std::optional<std::string_view> server_reference;  // 0x1C
  std::optional<std::string_view> reason_string;     // 0x1F
  std::optional<uint16_t> receive_maximum;       // 0x21 (not 0)
  std::optional<uint16_t> topic_alias_maximum;   // 0x22
  std::optional<uint16_t> topic_alias;           // 0x23 (not 0)
  std::optional<uint8_t> maximum_qos;            // 0x24 (0 or 1)
  std::optional<uint8_t> retain_available;       // 0x25 (0 or 1)
  std::vector<std::pair<std::string_view, std::string_view>> user_properties;  // 0x26 (may repeat, order kept)
  std::optional<uint32_t> maximum_packet_size;   // 0x27 (not 0)
  std::optional<uint8_t> wildcard_sub_available; // 0x28 (0 or 1)
  std::optional<uint8_t> sub_id_available;       // 0x29 (0 or 1)
  std::optional<uint8_t> shared_sub_available;   // 0x2A (0 or 1)
};

// Variable byte integer (1.5.5): 7 bits a byte, at most four bytes.
void encode_varint(std::string& out, uint32_t v);
// Reads one at `pos` of `in`, advancing `pos`; malformed when it runs past
// `in` or takes a fifth byte.
[[nodiscard]] decode_status read_varint(std::string_view in, size_t& pos, uint32_t& v) noexcept;

// Property length, then the properties, in the order of the struct fields.
void encode_properties(std::string& out, const properties& p);
// Reads a property length and the properties at `pos`.
[[nodiscard]] decode_status read_properties(std::string_view in, size_t& pos, properties& out);

// CONNECT: client id, clean start, keep alive, user name and password, and
// the session expiry and receive maximum properties (no will: evpipe sends none).
struct connect_packet {
  std::string client_id;
  bool clean_start = false;
  uint16_t keepalive_s = 60;
  std::optional<std::string> username;
  std::optional<std::string> password;
  uint32_t session_expiry_s = 0;   // 0 = the session ends with the connection
  uint16_t receive_maximum = 65535;  // 65535 is the default: not sent
};
void encode_connect(std::string& out, const connect_packet& p);
[[nodiscard]] decode_status parse_connect(const frame& f, connect_packet& out, properties& props);

struct connack_packet {
  bool session_present = false;
  uint8_t reason = 0;  // 0x00 success; >= 0x80 refused (reason_name)
  properties props;
};
[[nodiscard]] decode_status parse_connack(const frame& f, connack_packet& out);
void encode_connack(std::string& out, const connack_packet& p);

// PUBLISH: topic, packet id (QoS 1 and 2), properties, payload.
[[nodiscard]] decode_status parse_publish(const frame& f, publish_packet& out, properties& props);
void encode_publish(std::string& out, const publish_packet& p, const properties& props);

// PUBACK, PUBREC, PUBREL, PUBCOMP: packet id, reason code, properties. The
// short forms are used when they say the same (2 bytes: success, no
// properties), so a success acknowledgement is byte-identical to 3.1.1's.
struct ack_packet {
  uint16_t packet_id = 0;
  uint8_t reason = 0;
  properties props;
};
[[nodiscard]] decode_status parse_ack(const frame& f, ack_packet& out);
void encode_ack(std::string& out, packet_type type, const ack_packet& p);

// SUBSCRIBE: the options byte carries the QoS (no local, retain as published
// and retain handling are 0). SUBACK and UNSUBACK: one reason code per filter.
void encode_subscribe(std::string& out, const subscribe_packet& p, const properties& props);
[[nodiscard]] decode_status parse_subscribe(const frame& f, subscribe_packet& out, properties& props);
[[nodiscard]] decode_status parse_suback(const frame& f, suback_packet& out, properties& props);
void encode_suback(std::string& out, const suback_packet& p, const properties& props);
void encode_unsubscribe(std::string& out, const unsubscribe_packet& p, const properties& props);
[[nodiscard]] decode_status parse_unsubscribe(const frame& f, unsubscribe_packet& out, properties& props);
[[nodiscard]] decode_status parse_unsuback(const frame& f, suback_packet& out, properties& props);
void encode_unsuback(std::string& out, const suback_packet& p, const properties& props);

// DISCONNECT, either way: a reason code and properties (empty = 0x00, normal).
struct disconnect_packet {
  uint8_t reason = 0;
  properties props;
};
[[nodiscard]] decode_status parse_disconnect(const frame& f, disconnect_packet& out);
void encode_disconnect(std::string& out, const disconnect_packet& p);

// The specification's name of a reason code (2.4), for log lines.
[[nodiscard]] const char* reason_name(uint8_t code) noexcept;

}  // namespace evpipe::io::mqtt::v5
