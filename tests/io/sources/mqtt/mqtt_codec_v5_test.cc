// MQTT 5 codec (io/sources/mqtt/mqtt_codec_v5.cc), byte for byte: variable
// byte integers, every property a client meets, each packet both ways, and
// malformed properties rejected as values.

#include "io/sources/mqtt/mqtt_codec_v5.h"

#include <gtest/gtest.h>

#include <deque>

namespace evpipe::io::mqtt::v5 {
namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(static_cast<char>(c));
  return s;
}

// A frame of `wire`. Parsed packets hold views into the bytes, so the bytes
// are kept until the test program ends (a temporary would dangle).
frame framed(std::string wire) {
  static std::deque<std::string> kept;  // push_back keeps earlier elements in place
  const std::string& bytes = kept.emplace_back(std::move(wire));
  frame f;
  EXPECT_EQ(read_frame(bytes, 1 << 20, f), decode_status::ok);
  EXPECT_EQ(f.size, bytes.size());
  return f;
}

TEST(MqttCodecV5, VariableByteIntegers) {
  for (auto [v, wire] : std::vector<std::pair<uint32_t, std::string>>{
           {0, bytes({0x00})},
           {127, bytes({0x7F})},
           {128, bytes({0x80, 0x01})},
           {16383, bytes({0xFF, 0x7F})},
           {16384, bytes({0x80, 0x80, 0x01})},
           {2097151, bytes({0xFF, 0xFF, 0x7F})},
           {2097152, bytes({0x80, 0x80, 0x80, 0x01})},
           {268435455, bytes({0xFF, 0xFF, 0xFF, 0x7F})}}) {
    std::string out;
    encode_varint(out, v);
    EXPECT_EQ(out, wire) << v;
    size_t pos = 0;
    uint32_t back = 0;
    ASSERT_EQ(read_varint(wire, pos, back), decode_status::ok) << v;
    EXPECT_EQ(back, v);
    EXPECT_EQ(pos, wire.size());
  }
  size_t pos = 0;
  uint32_t v = 0;
  EXPECT_EQ(read_varint(bytes({0xFF, 0xFF, 0xFF, 0xFF, 0x01}), pos, v), decode_status::malformed);  // fifth byte
  pos = 0;
  EXPECT_EQ(read_varint(bytes({0x80}), pos, v), decode_status::malformed);  // runs out
}

TEST(MqttCodecV5, EveryPropertyByteForByteAndBack) {
  properties p;
  p.payload_format = 1;
  p.message_expiry = 0x01020304;
  p.content_type = "a/b";
  p.response_topic = "r";
  p.correlation_data = std::string_view("\x00\x01", 2);
  p.subscription_ids = {300};
  p.session_expiry = 60;
  p.assigned_client_id = "c";
  p.server_keep_alive = 30;
  p.auth_method = "m";
  p.auth_data = "d";
  p.request_problem_info = 1;
  p.will_delay = 5;
  p.request_response_info = 0;
  p.response_info = "i";
  p.server_reference = "s";
  p.reason_string = "why";
  p.receive_maximum = 100;
  p.topic_alias_maximum = 0;
  p.topic_alias = 7;
  p.maximum_qos = 1;
  p.retain_available = 0;
  p.user_properties = {{"tenant", "t1"}, {"tenant", "t2"}};
  p.maximum_packet_size = 1024;
  p.wildcard_sub_available = 1;
  p.sub_id_available = 0;
  p.shared_sub_available = 1;
  std::string out;
  encode_properties(out, p);
  std::string expect = bytes({0x01, 1, 0x02, 1, 2, 3, 4, 0x03, 0, 3, 'a', '/', 'b', 0x08, 0, 1, 'r', 0x09, 0, 2, 0, 1,
                              0x0B, 0xAC, 0x02, 0x11, 0, 0, 0, 60, 0x12, 0, 1, 'c', 0x13, 0, 30, 0x15, 0, 1, 'm',
                              0x16, 0, 1, 'd', 0x17, 1, 0x18, 0, 0, 0, 5, 0x19, 0, 0x1A, 0, 1, 'i', 0x1C, 0, 1, 's',
                              0x1F, 0, 3, 'w', 'h', 'y', 0x21, 0, 100, 0x22, 0, 0, 0x23, 0, 7, 0x24, 1, 0x25, 0,
                              0x26, 0, 6, 't', 'e', 'n', 'a', 'n', 't', 0, 2, 't', '1', 0x26, 0, 6, 't', 'e', 'n',
                              'a', 'n', 't', 0, 2, 't', '2', 0x27, 0, 0, 4, 0, 0x28, 1, 0x29, 0, 0x2A, 1});
  std::string len;
  encode_varint(len, static_cast<uint32_t>(expect.size()));
  EXPECT_EQ(out, len + expect);
  properties back;
  size_t pos = 0;
  ASSERT_EQ(read_properties(out, pos, back), decode_status::ok);
  EXPECT_EQ(pos, out.size());
  EXPECT_EQ(back.content_type, "a/b");
  EXPECT_EQ(back.subscription_ids, std::vector<uint32_t>{300});
  ASSERT_EQ(back.user_properties.size(), 2u);
  EXPECT_EQ(back.user_properties[1].second, "t2");
  EXPECT_EQ(back.receive_maximum, 100);
  EXPECT_EQ(back.maximum_packet_size, 1024u);
  EXPECT_EQ(back.shared_sub_available, 1);
  std::string again;
  encode_properties(again, back);
  EXPECT_EQ(again, out);
}

TEST(MqttCodecV5, MalformedPropertiesAreValuesNotExceptions) {
  auto bad = [](std::string props) {
    std::string in;
    encode_varint(in, static_cast<uint32_t>(props.size()));
    in += props;
    properties p;
    size_t pos = 0;
    return read_properties(in, pos, p);
  };
  EXPECT_EQ(bad(bytes({0x05, 0})), decode_status::malformed);              // unknown property id
  EXPECT_EQ(bad(bytes({0x21, 0, 0})), decode_status::malformed);           // receive maximum 0
  EXPECT_EQ(bad(bytes({0x21, 0, 1, 0x21, 0, 2})), decode_status::malformed);  // twice
  EXPECT_EQ(bad(bytes({0x01, 2})), decode_status::malformed);              // payload format 2
  EXPECT_EQ(bad(bytes({0x03, 0, 5, 'a'})), decode_status::malformed);      // string past the end
  EXPECT_EQ(bad(bytes({0x03, 0, 2, 0xC3, 0x28})), decode_status::malformed);  // not UTF-8
  EXPECT_EQ(bad(bytes({0x03, 0, 1, 0})), decode_status::malformed);        // U+0000
  EXPECT_EQ(bad(bytes({0x0B, 0})), decode_status::malformed);              // subscription id 0
  EXPECT_EQ(bad(bytes({0x27, 0, 0, 0, 0})), decode_status::malformed);     // maximum packet size 0
  EXPECT_EQ(bad(bytes({0x23, 0, 0})), decode_status::malformed);           // topic alias 0
  EXPECT_EQ(bad(bytes({0x13, 0})), decode_status::malformed);              // two-byte value cut short
  // A property length longer than what follows.
  properties p;
  size_t pos = 0;
  EXPECT_EQ(read_properties(bytes({5, 0x24, 1}), pos, p), decode_status::malformed);
  EXPECT_EQ(bad(bytes({0x26, 0, 1, 'k', 0, 1, 'v', 0x26, 0, 1, 'k', 0, 1, 'w'})), decode_status::ok);  // may repeat
}

TEST(MqttCodecV5, ConnectAndConnackByteForByteAndBack) {
  connect_packet c;
  c.client_id = "ev";
  c.keepalive_s = 30;
  c.session_expiry_s = 3600;
  c.receive_maximum = 100;
  c.username = "u";
  c.password = "p";
  std::string out;
  encode_connect(out, c);
  EXPECT_EQ(out, bytes({0x10, 29, 0, 4, 'M', 'Q', 'T', 'T', 5, 0xC0, 0, 30, 8, 0x11, 0, 0, 0x0E, 0x10, 0x21, 0, 100,
                        0, 2, 'e', 'v', 0, 1, 'u', 0, 1, 'p'}));
  connect_packet back;
  properties props;
  ASSERT_EQ(parse_connect(framed(out), back, props), decode_status::ok);
  EXPECT_EQ(back.client_id, "ev");
  EXPECT_FALSE(back.clean_start);
  EXPECT_EQ(back.session_expiry_s, 3600u);
  EXPECT_EQ(back.receive_maximum, 100);
  EXPECT_EQ(back.password, "p");

  connack_packet a;
  a.session_present = true;
  a.props.receive_maximum = 20;
  a.props.shared_sub_available = 0;
  out.clear();
  encode_connack(out, a);
  EXPECT_EQ(out, bytes({0x20, 8, 1, 0, 5, 0x21, 0, 20, 0x2A, 0}));
  connack_packet ab;
  ASSERT_EQ(parse_connack(framed(out), ab), decode_status::ok);
  EXPECT_TRUE(ab.session_present);
  EXPECT_EQ(ab.props.receive_maximum, 20);
  EXPECT_EQ(ab.props.shared_sub_available, 0);
  // Refused with a server reference (redirection); session present with a
  // failure, and a reason below 0x80, are malformed.
  connack_packet moved;
  ASSERT_EQ(parse_connack(framed(bytes({0x20, 7, 0, 0x9D, 4, 0x1C, 0, 1, 'h'})), moved), decode_status::ok);
  EXPECT_EQ(moved.reason, 0x9D);
  EXPECT_EQ(moved.props.server_reference, "h");
  EXPECT_EQ(parse_connack(framed(bytes({0x20, 3, 1, 0x87, 0})), moved), decode_status::malformed);
  EXPECT_EQ(parse_connack(framed(bytes({0x20, 3, 0, 0x05, 0})), moved), decode_status::malformed);
  // A property CONNACK may not carry (topic alias).
  EXPECT_EQ(parse_connack(framed(bytes({0x20, 6, 0, 0, 3, 0x23, 0, 1})), moved), decode_status::malformed);
}

TEST(MqttCodecV5, PublishWithPropertiesByteForByteAndBack) {
  publish_packet p;
  p.topic = "t/1";
  p.payload = "{}";
  p.qos = 1;
  p.packet_id = 10;
  properties props;
  props.content_type = "json";
  props.user_properties = {{"k", "v"}};
  std::string out;
  encode_publish(out, p, props);
  EXPECT_EQ(out, bytes({0x32, 24, 0, 3, 't', '/', '1', 0, 10, 14, 0x03, 0, 4, 'j', 's', 'o', 'n', 0x26, 0, 1, 'k', 0,
                        1, 'v', '{', '}'}));
  publish_packet back;
  properties bp;
  ASSERT_EQ(parse_publish(framed(out), back, bp), decode_status::ok);
  EXPECT_EQ(back.topic, "t/1");
  EXPECT_EQ(back.payload, "{}");
  EXPECT_EQ(back.packet_id, 10);
  EXPECT_EQ(bp.content_type, "json");
  ASSERT_EQ(bp.user_properties.size(), 1u);
  EXPECT_EQ(bp.user_properties[0].first, "k");
  // QoS 0 without properties: two bytes of topic, one byte of property length.
  out.clear();
  p.qos = 0;
  encode_publish(out, p, {});
  EXPECT_EQ(out, bytes({0x30, 8, 0, 3, 't', '/', '1', 0, '{', '}'}));
  // An empty topic needs a topic alias; a property PUBLISH may not carry.
  EXPECT_EQ(parse_publish(framed(bytes({0x30, 3, 0, 0, 0})), back, bp), decode_status::malformed);
  EXPECT_EQ(parse_publish(framed(bytes({0x30, 6, 0, 1, 't', 2, 0x21, 0})), back, bp), decode_status::malformed);
}

TEST(MqttCodecV5, AcknowledgementsWithReasonCodes) {
  std::string out;
  encode_ack(out, packet_type::puback, {5, 0, {}});
  EXPECT_EQ(out, bytes({0x40, 2, 0, 5})) << "success is the 3.1.1 short form";
  out.clear();
  encode_ack(out, packet_type::pubcomp, {5, 0x92, {}});
  EXPECT_EQ(out, bytes({0x70, 3, 0, 5, 0x92}));
  out.clear();
  ack_packet with_reason{6, 0x87, {}};
  with_reason.props.reason_string = "no";
  encode_ack(out, packet_type::pubrec, with_reason);
  EXPECT_EQ(out, bytes({0x50, 9, 0, 6, 0x87, 5, 0x1F, 0, 2, 'n', 'o'}));
  out.clear();
  encode_ack(out, packet_type::pubrel, {7, 0, {}});
  EXPECT_EQ(out, bytes({0x62, 2, 0, 7}));
  ack_packet a;
  ASSERT_EQ(parse_ack(framed(bytes({0x50, 9, 0, 6, 0x87, 5, 0x1F, 0, 2, 'n', 'o'})), a), decode_status::ok);
  EXPECT_EQ(a.packet_id, 6);
  EXPECT_EQ(a.reason, 0x87);
  EXPECT_EQ(a.props.reason_string, "no");
  ASSERT_EQ(parse_ack(framed(bytes({0x40, 3, 0, 5, 0x10})), a), decode_status::ok);
  EXPECT_EQ(a.reason, 0x10);
  EXPECT_EQ(parse_ack(framed(bytes({0x40, 3, 0, 5, 0x05})), a), decode_status::malformed);  // not a PUBACK reason
  EXPECT_EQ(parse_ack(framed(bytes({0x62, 3, 0, 5, 0x87})), a), decode_status::malformed);  // not a PUBREL reason
}

TEST(MqttCodecV5, SubscribeSubackUnsubscribeUnsuback) {
  subscribe_packet s;
  s.packet_id = 3;
  s.filters = {{"$share/g/a/#", 2}};
  std::string out;
  encode_subscribe(out, s, {});
  EXPECT_EQ(out, bytes({0x82, 18, 0, 3, 0, 0, 12, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 'a', '/', '#', 2}));
  subscribe_packet sb;
  properties props;
  ASSERT_EQ(parse_subscribe(framed(out), sb, props), decode_status::ok);
  EXPECT_EQ(sb.filters, s.filters);
  suback_packet ack{3, {0x02, 0x9E}};
  out.clear();
  encode_suback(out, ack, {});
  EXPECT_EQ(out, bytes({0x90, 5, 0, 3, 0, 0x02, 0x9E}));
  suback_packet back;
  ASSERT_EQ(parse_suback(framed(out), back, props), decode_status::ok);
  EXPECT_EQ(back.return_codes, (std::vector<uint8_t>{0x02, 0x9E}));
  EXPECT_EQ(parse_suback(framed(bytes({0x90, 4, 0, 3, 0, 0x03})), back, props), decode_status::malformed);

  unsubscribe_packet u{9, {"a/#"}};
  out.clear();
  encode_unsubscribe(out, u, {});
  EXPECT_EQ(out, bytes({0xA2, 8, 0, 9, 0, 0, 3, 'a', '/', '#'}));
  unsubscribe_packet ub;
  ASSERT_EQ(parse_unsubscribe(framed(out), ub, props), decode_status::ok);
  EXPECT_EQ(ub.filters, u.filters);
  out.clear();
  encode_unsuback(out, suback_packet{9, {0x11}}, {});
  EXPECT_EQ(out, bytes({0xB0, 4, 0, 9, 0, 0x11}));
  ASSERT_EQ(parse_unsuback(framed(out), back, props), decode_status::ok);
  EXPECT_EQ(back.return_codes, std::vector<uint8_t>{0x11});
  EXPECT_EQ(parse_unsuback(framed(bytes({0xB0, 4, 0, 9, 0, 0x02})), back, props), decode_status::malformed);
}

TEST(MqttCodecV5, DisconnectBothForms) {
  std::string out;
  encode_disconnect(out, {});
  EXPECT_EQ(out, bytes({0xE0, 0}));
  disconnect_packet d;
  ASSERT_EQ(parse_disconnect(framed(out), d), decode_status::ok);
  EXPECT_EQ(d.reason, 0);
  ASSERT_EQ(parse_disconnect(framed(bytes({0xE0, 6, 0x9C, 4, 0x1C, 0, 1, 'h'})), d), decode_status::ok);
  EXPECT_EQ(d.reason, 0x9C);
  EXPECT_EQ(d.props.server_reference, "h");
  EXPECT_STREQ(reason_name(d.reason), "use another server");
  ASSERT_EQ(parse_disconnect(framed(bytes({0xE0, 1, 0x8E})), d), decode_status::ok);
  EXPECT_STREQ(reason_name(d.reason), "session taken over");
  EXPECT_EQ(parse_disconnect(framed(bytes({0xE0, 1, 0x05})), d), decode_status::malformed);
  out.clear();
  disconnect_packet mine{0x04, {}};
  encode_disconnect(out, mine);
  EXPECT_EQ(out, bytes({0xE0, 1, 0x04}));
}

}  // namespace
}  // namespace evpipe::io::mqtt::v5
