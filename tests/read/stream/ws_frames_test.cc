// The stream's WebSocket framing (read/stream/ws_frames) and its shared
// event frames (read/stream/stream_frames): client frames unmasked and
// assembled, protocol breaks answered with a close status; each read's
// events laid out once per format, a client's rows one contiguous span.

#include <gtest/gtest.h>

#include "read/stream/stream_frames.h"
#include "read/stream/ws_frames.h"

namespace evpipe::read {
namespace {

// A client frame: masked with `key`.
std::string client_frame(uint8_t first_byte, std::string_view payload, bool masked = true) {
  std::string f;
  f += static_cast<char>(first_byte);
  const uint8_t mask_bit = masked ? 0x80 : 0;
  if (payload.size() < 126) {
    f += static_cast<char>(mask_bit | payload.size());
  } else {
    f += static_cast<char>(mask_bit | 126);
    f += static_cast<char>(payload.size() >> 8);
    f += static_cast<char>(payload.size() & 0xff);
  }
  const char key[4] = {0x0f, 0x3c, 0x55, 0x7a};
  if (masked) f.append(key, 4);
  for (size_t i = 0; i < payload.size(); ++i) f += masked ? static_cast<char>(payload[i] ^ key[i & 3]) : payload[i];
  return f;
}

using kind = ws_frame_reader::frame::kind;

TEST(WsFrameReader, MessagesArriveWholeWhateverTheChunksAndFragments) {
  ws_frame_reader r(1 << 16);
  std::string bytes = client_frame(0x81, R"({"type":"ping"})") + client_frame(0x01, "{\"a\":") +
                      client_frame(0x89, "hb") +  // a ping between fragments
                      client_frame(0x80, "1}") + client_frame(0x81, std::string(300, 'x'));
  std::vector<std::pair<kind, std::string>> got;
  for (char c : bytes) {  // one byte at a time
    r.append(std::string_view(&c, 1));
    for (auto f = r.next(); f.what != kind::none; f = r.next()) got.emplace_back(f.what, std::string(f.payload));
  }
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0], std::make_pair(kind::message, std::string(R"({"type":"ping"})")));
  EXPECT_EQ(got[1], std::make_pair(kind::ping, std::string("hb")));
  EXPECT_EQ(got[2], std::make_pair(kind::message, std::string("{\"a\":1}")));
  EXPECT_EQ(got[3], std::make_pair(kind::message, std::string(300, 'x')));
}

TEST(WsFrameReader, ProtocolBreaksCloseWithTheirStatus) {
  struct bad {
    std::string bytes;
    uint16_t code;
  };
  for (const auto& [bytes, code] : std::vector<bad>{
           {client_frame(0x81, "hi", false), 1002},           // not masked
           {client_frame(0xC1, "hi"), 1002},                  // a reserved bit
           {client_frame(0x83, "hi"), 1002},                  // a reserved opcode
           {client_frame(0x09, "hi"), 1002},                  // a fragmented control frame
           {client_frame(0x80, "hi"), 1002},                  // a continuation of nothing
           {client_frame(0x81, std::string(200, 'y')), 1009},  // over the limit of 100
           {client_frame(0x88, std::string("\x03\xe8", 2)), 1000},  // the client's own close
       }) {
    ws_frame_reader r(100);
    r.append(bytes);
    auto f = r.next();
    EXPECT_EQ(f.what, kind::close) << code;
    EXPECT_EQ(f.code, code);
    EXPECT_EQ(r.next().what, kind::none);  // nothing after a close
  }
}

TEST(WsFrames, ServerFramesAreUnmaskedWithTheShortestLength) {
  std::string f;
  append_ws_text_frame(f, "abc");
  EXPECT_EQ(f, std::string("\x81\x03" "abc", 5));
  f.clear();
  append_ws_text_frame(f, std::string(300, 'z'));
  EXPECT_EQ(f.substr(0, 4), std::string("\x81\x7e\x01\x2c", 4));
  EXPECT_EQ(f.size(), 304u);
  f.clear();
  append_ws_text_frame(f, std::string(70000, 'z'));
  EXPECT_EQ(f.substr(0, 10), std::string("\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70", 10));
  EXPECT_EQ(ws_close_frame(1009), std::string("\x88\x02\x03\xf1", 4));
  EXPECT_EQ(ws_control_frame(ws_opcode::pong, "hb"), std::string("\x8a\x02hb", 4));
}

event_row row(uint64_t tx, int64_t id, std::string_view payload, std::string_view headers = "") {
  event_row r;
  r.pos = {tx, id};
  r.topic = "a/\"b\"";
  r.payload = payload;
  r.headers = headers;
  return r;
}

TEST(EventFrames, EachFormatLaidOutOnceAndARunIsOneSpan) {
  event_frames f(true, true, 42);
  f.add(row(7, 1, R"({"n": 1})"));
  f.add(row(7, 2, R"({"n": 2})", R"({"content_type": "text/plain"})"));
  f.add(row(9, 3, R"({"n": 3})"));
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f.commit_ns(), 42);
  const std::string p2 = encode({7, 2});
  const std::string json2 = R"({"type":"event","position":")" + p2 +
                            R"(","topic":"a/\"b\"","event":{"n": 2},"headers":{"content_type": "text/plain"}})";
  std::string ws2;
  append_ws_text_frame(ws2, json2);
  EXPECT_EQ(f.span(frame_format::websocket, 1, 2), ws2);
  EXPECT_EQ(f.span(frame_format::sse, 1, 2), "id: " + p2 + "\nevent: event\ndata: " + json2 + "\n\n");
  // Rows 1..3 are the two last frames back to back.
  EXPECT_EQ(f.span(frame_format::websocket, 1, 3).substr(0, ws2.size()), ws2);
  EXPECT_EQ(f.span(frame_format::websocket, 0, 3).size(),
            f.span(frame_format::websocket, 0, 1).size() + f.span(frame_format::websocket, 1, 3).size());
  // What fits in a client's room: whole frames only.
  const size_t one = f.span(frame_format::websocket, 0, 1).size(), two = f.span(frame_format::websocket, 1, 2).size();
  EXPECT_EQ(f.fit(frame_format::websocket, 0, 3, one - 1), 0u);
  EXPECT_EQ(f.fit(frame_format::websocket, 0, 3, one), 1u);
  EXPECT_EQ(f.fit(frame_format::websocket, 0, 3, one + two), 2u);
  EXPECT_EQ(f.fit(frame_format::websocket, 1, 3, two + 5), 2u);
  EXPECT_EQ(f.fit(frame_format::sse, 0, 3, 1 << 20), 3u);
  EXPECT_EQ(f.first_after(position::start()), 0u);
  EXPECT_EQ(f.first_after({7, 1}), 1u);
  EXPECT_EQ(f.first_after({8, 0}), 2u);
  EXPECT_EQ(f.first_after({9, 3}), 3u);
}

TEST(FrameQueue, SpansShareTheBlockAndCountTheirBytes) {
  auto f = std::make_shared<event_frames>(true, false, 5);
  for (int64_t i = 1; i <= 4; ++i) f->add(row(1, i, R"({"x": true})"));
  std::shared_ptr<const event_frames> shared = std::move(f);
  frame_queue a, b;
  EXPECT_TRUE(a.push_events(shared, frame_format::websocket, 0, 4));   // was empty: wake the writer
  EXPECT_FALSE(a.push_message("\x81\x02{}"));                          // already woken
  EXPECT_TRUE(b.push_events(shared, frame_format::websocket, 2, 3));
  EXPECT_EQ(shared.use_count(), 3);  // one block, referenced by both queues and here
  EXPECT_EQ(shared->bytes(frame_format::websocket), shared->span(frame_format::websocket, 0, 4).size());
  EXPECT_EQ(a.bytes(), shared->bytes(frame_format::websocket) + 4);
  // b holds one row, and keeps the whole block alive: it is charged the block.
  EXPECT_EQ(b.bytes(), shared->bytes(frame_format::websocket));
  std::vector<frame_queue::item> items;
  a.take(items);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].events, 4u);
  EXPECT_EQ(items[0].commit_ns, 5);
  EXPECT_EQ(items[0].last, (position{1, 4}));
  EXPECT_EQ(items[0].bytes.data(), shared->span(frame_format::websocket, 0, 4).data());  // not copied
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(items[0].charge, shared->bytes(frame_format::websocket));
  EXPECT_EQ(items[1].charge, 4u);
  a.sent(items[0].charge + items[1].charge);
  EXPECT_EQ(a.bytes(), 0u);
  EXPECT_TRUE(a.push_message("x"));  // empty again: the next push wakes
}

// A filtered client takes several runs of one read: the block is charged
// once, with its first span, while that span is queued; again once it has
// been taken; a later block is charged again, even where a freed block's
// memory is reused (blocks are told apart by serial).
TEST(FrameQueue, ABlockIsChargedOnceWhateverTheNumberOfItsSpans) {
  frame_queue q;
  std::vector<frame_queue::item> items;
  size_t block_bytes = 0;
  for (int round = 0; round < 3; ++round) {
    auto f = std::make_shared<event_frames>(true, true, 0);
    for (int64_t i = 1; i <= 6; ++i) f->add(row(round + 1, i, R"({"y": 1})"));
    std::shared_ptr<const event_frames> shared = std::move(f);
    block_bytes = shared->bytes(frame_format::sse);
    EXPECT_GT(block_bytes, shared->bytes(frame_format::websocket));  // each format its own size
    q.push_events(shared, frame_format::sse, 0, 1);
    q.push_events(shared, frame_format::sse, 3, 4);
    q.push_events(shared, frame_format::sse, 5, 6);
    EXPECT_EQ(q.bytes(), block_bytes);
    q.take(items);
    ASSERT_EQ(items.size(), 3u);
    EXPECT_EQ(items[0].charge, block_bytes);
    EXPECT_EQ(items[1].charge + items[2].charge, 0u);
    // Taken (its charge may come back before a later span is written): the
    // block's next span is charged again.
    q.push_events(shared, frame_format::sse, 4, 5);
    EXPECT_EQ(q.bytes(), 2 * block_bytes);
    q.take(items);
    ASSERT_EQ(items.size(), 4u);
    EXPECT_EQ(items[3].charge, block_bytes);
    q.sent(items[0].charge + items[1].charge + items[2].charge + items[3].charge);
    EXPECT_EQ(q.bytes(), 0u);
    items.clear();  // the block is freed here; the next round's may take its place
  }
}

}  // namespace
}  // namespace evpipe::read
