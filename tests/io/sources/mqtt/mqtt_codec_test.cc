#include "io/sources/mqtt/mqtt_codec.h"

#include <gtest/gtest.h>

namespace evpipe::io::mqtt {
namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(static_cast<char>(c));
  return s;
}

frame framed(const std::string& wire) {
  frame f;
  EXPECT_EQ(read_frame(wire, 1 << 20, f), decode_status::ok);
  EXPECT_EQ(f.size, wire.size());
  return f;
}

TEST(MqttCodec, ConnectByteForByteAndBack) {
  connect_packet p;
  p.client_id = "evpipe";
  p.clean_session = false;
  p.keepalive_s = 60;
  p.username = "u";
  p.password = "p";
  std::string out;
  encode_connect(out, p);
  EXPECT_EQ(out, bytes({0x10, 24, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xC0, 0, 60, 0, 6, 'e', 'v', 'p', 'i', 'p', 'e', 0, 1, 'u',
                        0, 1, 'p'}));
  connect_packet back;
  ASSERT_EQ(parse_connect(framed(out), back), decode_status::ok);
  EXPECT_EQ(back.client_id, "evpipe");
  EXPECT_FALSE(back.clean_session);
  EXPECT_EQ(back.keepalive_s, 60);
  EXPECT_EQ(back.username, "u");
  EXPECT_EQ(back.password, "p");
}

TEST(MqttCodec, SmallPacketsByteForByte) {
  std::string out;
  encode_connack(out, {true, 0});
  EXPECT_EQ(out, bytes({0x20, 2, 1, 0}));
  out.clear();
  encode_puback(out, 10);
  EXPECT_EQ(out, bytes({0x40, 2, 0, 10}));
  out.clear();
  encode_pingreq(out);
  encode_pingresp(out);
  encode_disconnect(out);
  EXPECT_EQ(out, bytes({0xC0, 0, 0xD0, 0, 0xE0, 0}));
  out.clear();
  encode_subscribe(out, {1, {{"tracker/#", 1}}});
  EXPECT_EQ(out, bytes({0x82, 14, 0, 1, 0, 9, 't', 'r', 'a', 'c', 'k', 'e', 'r', '/', '#', 1}));
  out.clear();
  encode_suback(out, {1, {1, 0x80}});
  EXPECT_EQ(out, bytes({0x90, 4, 0, 1, 1, 0x80}));
}

TEST(MqttCodec, PublishBothQosLevelsByteForByteAndBack) {
  std::string out;
  encode_publish(out, {"a/b", "hi", 1, true, false, 10});
  EXPECT_EQ(out, bytes({0x3A, 9, 0, 3, 'a', '/', 'b', 0, 10, 'h', 'i'}));
  publish_packet back;
  ASSERT_EQ(parse_publish(framed(out), back), decode_status::ok);
  EXPECT_EQ(back.topic, "a/b");
  EXPECT_EQ(back.payload, "hi");
  EXPECT_EQ(back.qos, 1);
  EXPECT_TRUE(back.dup);
  EXPECT_EQ(back.packet_id, 10);
  out.clear();
  encode_publish(out, {"a/b", "hi", 0, false, true, 0});
  EXPECT_EQ(out, bytes({0x31, 7, 0, 3, 'a', '/', 'b', 'h', 'i'}));
  ASSERT_EQ(parse_publish(framed(out), back), decode_status::ok);
  EXPECT_TRUE(back.retain);
  EXPECT_EQ(back.packet_id, 0);
}

TEST(MqttCodec, RemainingLengthEdges) {
  const std::pair<uint32_t, std::string> cases[] = {
      {0, bytes({0x00})},
      {127, bytes({0x7F})},
      {128, bytes({0x80, 0x01})},
      {16383, bytes({0xFF, 0x7F})},
      {16384, bytes({0x80, 0x80, 0x01})},
      {2097151, bytes({0xFF, 0xFF, 0x7F})},
      {2097152, bytes({0x80, 0x80, 0x80, 0x01})},
      {max_remaining_length, bytes({0xFF, 0xFF, 0xFF, 0x7F})},
  };
  for (const auto& [n, wire] : cases) {
    std::string out;
    encode_remaining_length(out, n);
    EXPECT_EQ(out, wire) << n;
    // Decoding the length: an empty body frames at once (parsing it is a
    // separate step); any longer one waits for its body.
    std::string packet = bytes({0x30}) + wire;
    frame f;
    EXPECT_EQ(read_frame(packet, max_remaining_length + 5, f), n == 0 ? decode_status::ok : decode_status::need_more)
        << n;
  }
  // A publish with a 16384-byte body frames exactly.
  std::string big;
  encode_publish(big, {"t", std::string(16384 - 3, 'x'), 0, false, false, 0});
  frame f;
  ASSERT_EQ(read_frame(big, 1 << 20, f), decode_status::ok);
  EXPECT_EQ(f.body.size(), 16384u);
  EXPECT_EQ(big.substr(1, 3), bytes({0x80, 0x80, 0x01}));
  // A fifth length byte is malformed, not a read past the end.
  EXPECT_EQ(read_frame(bytes({0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}), 1 << 30, f), decode_status::malformed);
}

TEST(MqttCodec, PartialBuffersNeedMoreAndLimitsAreKept) {
  std::string out;
  encode_publish(out, {"a/b", "payload", 1, false, false, 7});
  frame f;
  for (size_t n = 0; n < out.size(); ++n) {
    EXPECT_EQ(read_frame(std::string_view(out).substr(0, n), 1 << 20, f), decode_status::need_more) << n;
  }
  EXPECT_EQ(read_frame(out, 8, f), decode_status::too_large);
  // Two packets back to back: the first frames alone.
  std::string two = out;
  encode_pingreq(two);
  ASSERT_EQ(read_frame(two, 1 << 20, f), decode_status::ok);
  EXPECT_EQ(f.size, out.size());
}

TEST(MqttCodec, MalformedPacketsAreRejected) {
  frame f;
  EXPECT_EQ(read_frame(bytes({0x00, 0}), 100, f), decode_status::malformed);  // type 0
  EXPECT_EQ(read_frame(bytes({0xF0, 0}), 100, f), decode_status::malformed);  // type 15
  EXPECT_EQ(read_frame(bytes({0x80, 0}), 100, f), decode_status::malformed);  // SUBSCRIBE flags must be 0010
  EXPECT_EQ(read_frame(bytes({0xC1, 0}), 100, f), decode_status::malformed);  // PINGREQ flags must be 0000
  EXPECT_EQ(read_frame(bytes({0x36, 0}), 100, f), decode_status::malformed);  // PUBLISH QoS 3

  publish_packet p;
  auto publish_status = [&](const std::string& wire) {
    frame pf;
    auto st = read_frame(wire, 1 << 20, pf);
    return st == decode_status::ok ? parse_publish(pf, p) : st;
  };
  EXPECT_EQ(publish_status(bytes({0x38, 5, 0, 3, 'a', '/', 'b'})), decode_status::malformed);  // QoS 0 with DUP
  EXPECT_EQ(publish_status(bytes({0x30, 5, 0, 3, 'a', '/', '+'})), decode_status::malformed);  // wildcard in a name
  EXPECT_EQ(publish_status(bytes({0x30, 2, 0, 0})), decode_status::malformed);                 // empty topic
  EXPECT_EQ(publish_status(bytes({0x32, 7, 0, 3, 'a', '/', 'b', 0, 0})), decode_status::malformed);  // packet id 0
  EXPECT_EQ(publish_status(bytes({0x30, 4, 0, 9, 'a', 'b'})), decode_status::malformed);        // string past the end
  EXPECT_EQ(publish_status(bytes({0x30, 5, 0, 3, 'a', 0xC0, 0xAF})), decode_status::malformed);  // bad UTF-8
  EXPECT_EQ(publish_status(bytes({0x36, 7, 0, 3, 'a', '/', 'b', 0, 1})), decode_status::malformed);  // QoS 3

  connack_packet ca;
  EXPECT_EQ(parse_connack(framed(bytes({0x20, 2, 0, 6})), ca), decode_status::malformed);  // no such return code
  EXPECT_EQ(parse_connack(framed(bytes({0x20, 2, 2, 0})), ca), decode_status::malformed);  // reserved ack flag
  suback_packet sa;
  EXPECT_EQ(parse_suback(framed(bytes({0x90, 3, 0, 1, 3})), sa), decode_status::malformed);
  subscribe_packet sp;
  EXPECT_EQ(parse_subscribe(framed(bytes({0x82, 2, 0, 1})), sp), decode_status::malformed);  // no filter
  EXPECT_EQ(parse_subscribe(framed(bytes({0x82, 8, 0, 1, 0, 3, 'a', '#', 'b', 1})), sp), decode_status::malformed);
  uint16_t id;
  EXPECT_EQ(parse_packet_id(framed(bytes({0x40, 2, 0, 0})), id), decode_status::malformed);
  connect_packet cp;
  EXPECT_EQ(parse_connect(framed(bytes({0x10, 10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x01, 0, 60})), cp),
            decode_status::malformed);  // reserved connect flag
  EXPECT_EQ(parse_connect(framed(bytes({0x10, 12, 0, 4, 'M', 'Q', 'I', 's', 3, 0x02, 0, 60, 0, 0})), cp),
            decode_status::malformed);  // MQTT 3.1's protocol name
}

TEST(MqttCodec, Qos2PublishAndItsHandshakeByteForByte) {
  // PUBLISH QoS 2, DUP set, retain clear: 0x3C; topic "a/b", id 0x1234, payload "{}".
  std::string in = bytes({0x3C, 9, 0, 3, 'a', '/', 'b', 0x12, 0x34, '{', '}'});
  publish_packet p;
  ASSERT_EQ(parse_publish(framed(in), p), decode_status::ok);
  EXPECT_EQ(p.qos, 2);
  EXPECT_TRUE(p.dup);
  EXPECT_EQ(p.packet_id, 0x1234);
  EXPECT_EQ(p.topic, "a/b");
  EXPECT_EQ(p.payload, "{}");
  std::string out;
  encode_publish(out, p);
  EXPECT_EQ(out, in);
  // QoS 2 needs a packet id other than 0, like QoS 1.
  EXPECT_EQ(parse_publish(framed(bytes({0x34, 7, 0, 3, 'a', '/', 'b', 0, 0})), p), decode_status::malformed);

  out.clear();
  encode_pubrec(out, 0x1234);
  EXPECT_EQ(out, bytes({0x50, 2, 0x12, 0x34}));
  out.clear();
  encode_pubrel(out, 0x1234);
  EXPECT_EQ(out, bytes({0x62, 2, 0x12, 0x34}));  // PUBREL's fixed flags are 0010
  out.clear();
  encode_pubcomp(out, 0xBEEF);
  EXPECT_EQ(out, bytes({0x70, 2, 0xBE, 0xEF}));

  uint16_t id = 0;
  for (auto [packet, want] : {std::pair{bytes({0x50, 2, 0, 7}), 7}, {bytes({0x62, 2, 1, 0}), 256},
                              {bytes({0x70, 2, 0xff, 0xff}), 65535}, {bytes({0x40, 2, 0, 9}), 9}}) {
    ASSERT_EQ(parse_packet_id(framed(packet), id), decode_status::ok);
    EXPECT_EQ(id, want);
  }
  frame f;
  EXPECT_EQ(read_frame(bytes({0x60, 2, 0, 1}), 1024, f), decode_status::malformed);  // PUBREL with flags 0000
  EXPECT_EQ(read_frame(bytes({0x52, 2, 0, 1}), 1024, f), decode_status::malformed);  // PUBREC with flags 0010
  EXPECT_EQ(parse_packet_id(framed(bytes({0x50, 3, 0, 1, 0})), id), decode_status::malformed);  // trailing byte
  EXPECT_EQ(parse_packet_id(framed(bytes({0x70, 2, 0, 0})), id), decode_status::malformed);     // id 0
  EXPECT_EQ(parse_packet_id(framed(bytes({0xD0, 0})), id), decode_status::malformed);           // PINGRESP: no id
}

TEST(MqttCodec, FilterCanMatchAPrefix) {
  for (const char* f : {"#", "tracker/#", "+/dlq/#", "tracker/+/x", "tracker/dlq/#", "tracker/dlq/a", "+/+/+",
                        "tracker/dlq/"}) {
    EXPECT_TRUE(filter_can_match_prefix(f, "tracker/dlq/")) << f;
  }
  for (const char* f : {"tracker/events/#", "tracker/dlq", "tracker", "tracker/+", "+", "other/#", "tracker/dlqx/#"}) {
    EXPECT_FALSE(filter_can_match_prefix(f, "tracker/dlq/")) << f;
  }
  EXPECT_TRUE(filter_can_match_prefix("dead-x/#", "dead"));   // a prefix may end inside a level
  EXPECT_FALSE(filter_can_match_prefix("dea", "dead"));
}

TEST(MqttCodec, TopicRules) {
  for (const char* ok : {"a", "a/b", "/", "tracker/events/projects/created", "autocore/ESP32_001/telemetry"}) {
    EXPECT_TRUE(valid_topic_name(ok)) << ok;
    EXPECT_TRUE(valid_topic_filter(ok)) << ok;
  }
  for (const char* ok : {"#", "+", "a/+/c", "a/#", "+/+", "$share/g/tracker/#"}) EXPECT_TRUE(valid_topic_filter(ok)) << ok;
  for (const char* bad : {"", "a/#/b", "a+", "a/b#", "#/a"}) EXPECT_FALSE(valid_topic_filter(bad)) << bad;
  for (const char* bad : {"", "a/+", "#"}) EXPECT_FALSE(valid_topic_name(bad)) << bad;
  EXPECT_FALSE(valid_topic_name(std::string("a\0b", 3)));
}

TEST(MqttCodec, UnsubscribeAndUnsubackByteForByteAndBack) {
  unsubscribe_packet p;
  p.packet_id = 7;
  p.filters = {"a/#", "b"};
  std::string out;
  encode_unsubscribe(out, p);
  EXPECT_EQ(out, bytes({0xA2, 10, 0, 7, 0, 3, 'a', '/', '#', 0, 1, 'b'}));
  unsubscribe_packet back;
  ASSERT_EQ(parse_unsubscribe(framed(out), back), decode_status::ok);
  EXPECT_EQ(back.packet_id, 7);
  EXPECT_EQ(back.filters, p.filters);
  std::string ack;
  encode_unsuback(ack, 7);
  EXPECT_EQ(ack, bytes({0xB0, 2, 0, 7}));
  uint16_t id = 0;
  ASSERT_EQ(parse_packet_id(framed(ack), id), decode_status::ok);
  EXPECT_EQ(id, 7);
  // No filter at all, a bad filter, a packet id 0: malformed values.
  EXPECT_EQ(parse_unsubscribe(framed(bytes({0xA2, 2, 0, 7})), back), decode_status::malformed);
  EXPECT_EQ(parse_unsubscribe(framed(bytes({0xA2, 6, 0, 7, 0, 2, 'a', '#'})), back), decode_status::malformed);
  EXPECT_EQ(parse_unsubscribe(framed(bytes({0xA2, 5, 0, 0, 0, 1, 'b'})), back), decode_status::malformed);
}


}  // namespace
}  // namespace evpipe::io::mqtt
