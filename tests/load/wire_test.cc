#include "load/wire.h"

#include <gtest/gtest.h>

#include "io/sources/mqtt/mqtt_codec.h"

namespace evpipe::load {
namespace {

namespace mqtt = evpipe::io::mqtt;

TEST(Wire, ParsesEveryTargetForm) {
  auto t = parse_target("tcp://127.0.0.1:7000");
  EXPECT_EQ(t.kind, target_kind::tcp);
  EXPECT_EQ(t.host, "127.0.0.1");
  EXPECT_EQ(t.port, "7000");
  EXPECT_EQ(parse_target("mqtt://broker:1883").kind, target_kind::mqtt);
  EXPECT_EQ(parse_target("mqtt-serve://[::1]:1884").host, "::1");
  auto h = parse_target("http://localhost:8080/v1/events");
  EXPECT_EQ(h.kind, target_kind::http);
  EXPECT_EQ(h.path, "/v1/events");
  EXPECT_THROW((void)parse_target("udp://h:1"), std::invalid_argument);
  EXPECT_THROW((void)parse_target("tcp://h"), std::invalid_argument);
  EXPECT_THROW((void)parse_target("tcp://h:1/path"), std::invalid_argument);
}

TEST(Wire, NdjsonCountsCumulativeAcksAcrossChunks) {
  auto w = make_wire(parse_target("tcp://h:1"), {}, 1);
  std::string out, in, reply;
  w->add(0, "{\"a\":1}", out);
  EXPECT_EQ(out, "{\"a\":1}\n");
  in = "{\"ack\":3}\n{\"ack\":";
  EXPECT_EQ(w->on_bytes(in, 0, reply), 3u);
  in += "7}\n";
  EXPECT_EQ(w->on_bytes(in, 3, reply), 7u);
  EXPECT_TRUE(in.empty());
}

TEST(Wire, NdjsonReadsSelectiveRunsFromZero) {
  auto w = make_wire(parse_target("tcp://h:1"), {}, 1);
  std::string in = "{\"ack\":2,\"sack\":[[4,6],[9,9]]}\n{\"ack\":3}\n{\"ack\":3,\"sack\":[[11,";
  std::string reply;
  EXPECT_EQ(w->on_bytes(in, 0, reply), 3u);
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  w->take_selective(runs);
  EXPECT_EQ(runs, (std::vector<std::pair<uint64_t, uint64_t>>{{3, 5}, {8, 8}}));  // event numbers from 0
  in += "12]]}\n";
  EXPECT_EQ(w->on_bytes(in, 3, reply), 3u);  // a line of runs only: the count stays
  runs.clear();
  w->take_selective(runs);
  EXPECT_EQ(runs, (std::vector<std::pair<uint64_t, uint64_t>>{{10, 11}}));
  runs.clear();
  w->take_selective(runs);
  EXPECT_TRUE(runs.empty());  // each run once
  EXPECT_TRUE(in.empty());
}

TEST(Wire, MqttPublishesQos1AndCountsPubacksAndAnswersPings) {
  auto w = make_wire(parse_target("mqtt-serve://h:1"), {.topic = "tracker/events/x"}, 1);
  std::string out;
  w->add(65535, "{}", out);  // packet ids wrap from 65535 to 1
  mqtt::frame f;
  ASSERT_EQ(mqtt::read_frame(out, 1 << 20, f), mqtt::decode_status::ok);
  mqtt::publish_packet p;
  ASSERT_EQ(mqtt::parse_publish(f, p), mqtt::decode_status::ok);
  EXPECT_EQ(p.qos, 1);
  EXPECT_EQ(p.packet_id, 1);
  EXPECT_EQ(p.topic, "tracker/events/x");

  std::string in, reply;
  mqtt::encode_puback(in, 1);
  mqtt::encode_pingreq(in);
  mqtt::encode_puback(in, 2);
  in.push_back(0x40);  // half a PUBACK
  EXPECT_EQ(w->on_bytes(in, 10, reply), 12u);
  EXPECT_EQ(in.size(), 1u);
  std::string pong;
  mqtt::encode_pingresp(pong);
  EXPECT_EQ(reply, pong);
}

TEST(Wire, HttpBatchesIntoRequestsAndCountsAcceptedEvents) {
  auto w = make_wire(parse_target("http://h:8080/v1/events"), {.bearer_token = "tok"}, 50);
  EXPECT_EQ(w->max_group(), 50u);
  std::string out;
  w->add(0, "{\"a\":1}", out);
  w->add(1, "{\"a\":2}", out);
  EXPECT_TRUE(out.empty());
  w->finish(out);
  EXPECT_NE(out.find("POST /v1/events HTTP/1.1\r\n"), std::string::npos);
  EXPECT_NE(out.find("Authorization: Bearer tok\r\n"), std::string::npos);
  EXPECT_NE(out.find("Content-Length: 16\r\n\r\n{\"a\":1}\n{\"a\":2}\n"), std::string::npos);

  std::string body = "{\"accepted\":2,\"ok\":2}\n";
  std::string response = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  std::string in = response + response.substr(0, 20), reply;
  EXPECT_EQ(w->on_bytes(in, 0, reply), 2u);
  in += response.substr(20);
  EXPECT_EQ(w->on_bytes(in, 2, reply), 4u);
  in = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";
  EXPECT_THROW((void)w->on_bytes(in, 4, reply), std::runtime_error);
}

TEST(Wire, NatsPublishesWithAReplyInboxAndCountsStreamAcks) {
  EXPECT_EQ(parse_target("nats://127.0.0.1:4222").kind, target_kind::nats);
  auto w = make_wire(parse_target("nats://h:4222"), {.topic = "tracker/events/load"}, 1);
  std::string out;
  w->add(0, "{\"a\":1}", out);
  w->add(1, "{}", out);
  // The inbox is subscribed once, before the first PUB.
  ASSERT_TRUE(out.starts_with("SUB _INBOX.")) << out;
  std::string inbox = out.substr(4, out.find(' ', 4) - 4);
  EXPECT_EQ(out, "SUB " + inbox + " 1\r\nPUB tracker.events.load " + inbox + " 7\r\n{\"a\":1}\r\nPUB tracker.events.load " +
                     inbox + " 2\r\n{}\r\n");

  std::string ack = "{\"stream\":\"EVENTS\",\"seq\":1}";
  std::string msg = "MSG " + inbox + " 1 " + std::to_string(ack.size()) + "\r\n" + ack + "\r\n";
  std::string in = "+OK\r\n" + msg + "PING\r\n" + msg.substr(0, 10), reply;
  EXPECT_EQ(w->on_bytes(in, 5, reply), 6u);
  EXPECT_EQ(reply, "PONG\r\n");
  in += msg.substr(10);
  EXPECT_EQ(w->on_bytes(in, 6, reply), 7u);
  EXPECT_TRUE(in.empty());

  // No stream takes the subject (status 503 with no_responders), or the
  // stream refuses the message: the run stops with the reason.
  std::string hdr = "NATS/1.0 503\r\n\r\n";
  in = "HMSG " + inbox + " 1 " + std::to_string(hdr.size()) + " " + std::to_string(hdr.size()) + "\r\n" + hdr + "\r\n";
  EXPECT_THROW((void)w->on_bytes(in, 7, reply), std::runtime_error);
  std::string err = "{\"error\":{\"code\":503,\"description\":\"insufficient resources\"}}";
  in = "MSG " + inbox + " 1 " + std::to_string(err.size()) + "\r\n" + err + "\r\n";
  EXPECT_THROW((void)w->on_bytes(in, 7, reply), std::runtime_error);
}

}  // namespace
}  // namespace evpipe::load
