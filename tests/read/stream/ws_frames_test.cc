// The stream's WebSocket framing (read/stream/ws_frames) and its shared
// event frames (read/stream/stream_frames): client frames unmasked and
// assembled, protocol breaks answered with a close status; each read's
// events laid out once per format, a client's rows one contiguous span; who
// writes a client's socket (the hub while the client's thread is idle, the
// client's thread what the socket did not take at once).

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>

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

// A connected pair of local stream sockets; [0] is the client's side of the
// server (the socket the queue writes), [1] what the client reads.
struct socket_pair {
  int fd[2] = {-1, -1};
  explicit socket_pair(int send_buffer = 0) {
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fd), 0);
    if (send_buffer > 0) {
      ::setsockopt(fd[0], SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof send_buffer);
      ::setsockopt(fd[1], SOL_SOCKET, SO_RCVBUF, &send_buffer, sizeof send_buffer);
    }
  }
  ~socket_pair() {
    for (int f : fd) {
      if (f >= 0) ::close(f);
    }
  }
  // Everything readable now (the peer's bytes so far).
  std::string drain() const {
    std::string out;
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(fd[1], buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
};

std::shared_ptr<const event_frames> block_of(uint64_t tx, int64_t rows, int64_t commit_ns, size_t payload_bytes = 8) {
  auto f = std::make_shared<event_frames>(true, false, commit_ns);
  const std::string payload = "{\"p\":\"" + std::string(payload_bytes, 'x') + "\"}";
  for (int64_t i = 1; i <= rows; ++i) f->add(row(tx, i, payload));
  return f;
}

// The usual case: the hub writes the read's span to an idle client's socket
// itself; nothing is left for the client's thread, whose charge, position
// and commit_to_send are settled as if it had written it.
TEST(FrameQueue, TheHubWritesAnIdleClientsSocketItself) {
  socket_pair sp;
  frame_queue q;
  pipeline::histogram commit_to_send;
  auto shared = block_of(3, 5, 1);
  EXPECT_TRUE(q.push_events(shared, frame_format::websocket, 0, 5));
  EXPECT_TRUE(q.write_now(commit_to_send)) << "no socket attached: the client's thread must be woken";
  std::vector<frame_queue::item> items;
  q.take(items);
  q.sent(items[0].charge);
  EXPECT_TRUE(q.release());
  items.clear();

  q.attach(sp.fd[0]);
  EXPECT_TRUE(q.push_events(shared, frame_format::websocket, 1, 4));
  EXPECT_TRUE(q.push_message("!caught up!", position{3, 9}) == false);
  EXPECT_FALSE(q.write_now(commit_to_send)) << "the socket took it all: no wake";
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.bytes(), 0u);
  EXPECT_EQ(sp.drain(), std::string(shared->span(frame_format::websocket, 1, 4)) + "!caught up!");
  EXPECT_EQ(q.last_handed(), (position{3, 9}));
  EXPECT_EQ(commit_to_send.read().total(), 3u) << "the three events, timed from their commit";
  EXPECT_GT(q.last_hub_write_ns(), 0);

  // A filtered client's many runs of one read (more spans than one sendmsg
  // takes, IOV_MAX): all written, in order, without the client's thread.
  std::string runs;
  for (int i = 0; i < 1500; ++i) {
    const std::string m = "<" + std::to_string(i) + ">";
    runs += m;
    EXPECT_EQ(q.push_message(m), i == 0);
  }
  EXPECT_FALSE(q.write_now(commit_to_send));
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(sp.drain(), runs);

  // Detached (the client's thread is about to close the socket): nothing
  // more is written, and the client's thread is told.
  q.detach();
  EXPECT_TRUE(q.push_events(shared, frame_format::websocket, 4, 5));
  EXPECT_TRUE(q.write_now(commit_to_send));
  EXPECT_EQ(sp.drain(), "");
  EXPECT_FALSE(q.empty());
}

// A client that reads slower than the stream: the hub writes what the socket
// takes without blocking and leaves the rest, the rest of a begun frame
// first, to the client's thread, which holds the socket (the hub writes
// nothing meanwhile) until a release that finds the queue empty. The client
// reads every byte once, in order.
TEST(FrameQueue, WhatTheSocketDoesNotTakeIsTheClientThreadsToWriteFirst) {
  socket_pair sp(4096);
  frame_queue q;
  q.attach(sp.fd[0]);
  pipeline::histogram commit_to_send;
  auto first = block_of(1, 400, 1, 100);
  auto second = block_of(2, 10, 1);
  const std::string expected = std::string(first->span(frame_format::websocket, 0, 400)) +
                               std::string(second->span(frame_format::websocket, 0, 10));
  ASSERT_TRUE(q.push_events(first, frame_format::websocket, 0, 400));
  EXPECT_TRUE(q.write_now(commit_to_send)) << "a 4 KiB socket cannot take " << expected.size() << " bytes";
  std::string got = sp.drain();
  ASSERT_GT(got.size(), 0u);
  ASSERT_LT(got.size(), first->bytes(frame_format::websocket));
  EXPECT_TRUE(q.mid_frame()) << "part of a span went out: its rest must go before anything else";
  EXPECT_EQ(q.last_handed(), (position{1, 400})) << "a begun span is handed: the client gets all of it";
  EXPECT_EQ(commit_to_send.read().total(), 0u);

  // The client's thread holds the socket now: the next read is queued, not written.
  EXPECT_FALSE(q.push_events(second, frame_format::websocket, 0, 10));
  EXPECT_FALSE(q.write_now(commit_to_send));
  EXPECT_EQ(sp.drain(), "");
  EXPECT_GT(q.bytes(), first->bytes(frame_format::websocket)) << "both blocks still charged";

  // drop_unbegun keeps the begun rest (only a resubscribe drops, and the
  // socket must finish its frame).
  std::vector<frame_queue::item> items;
  q.take(items);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].bytes.size() + got.size(), first->bytes(frame_format::websocket));
  std::thread reader([&] {
    std::string more;
    char buf[4096];
    while (got.size() + more.size() < expected.size()) {
      ssize_t n = ::recv(sp.fd[1], buf, sizeof buf, 0);
      if (n <= 0) break;
      more.append(buf, static_cast<size_t>(n));
    }
    got += more;
  });
  for (const auto& it : items) {
    for (std::string_view rest = it.bytes; !rest.empty();) {
      ssize_t n = ::send(sp.fd[0], rest.data(), rest.size(), MSG_NOSIGNAL);
      ASSERT_GT(n, 0);
      rest.remove_prefix(static_cast<size_t>(n));
    }
  }
  reader.join();
  EXPECT_EQ(got, expected);
  q.sent(items[0].charge + items[1].charge);
  EXPECT_EQ(q.bytes(), 0u);
  EXPECT_TRUE(q.release()) << "nothing queued meanwhile: the hub writes again";
  EXPECT_TRUE(q.push_message("after"));
  EXPECT_FALSE(q.write_now(commit_to_send));
  EXPECT_EQ(sp.drain(), "after");
}

// More queued while the client's thread wrote: release() keeps the socket
// and the thread takes again. A dropped queue keeps only a begun frame.
TEST(FrameQueue, ReleaseKeepsTheSocketWhileFramesWaitAndADropKeepsOnlyABegunFrame) {
  socket_pair sp(4096);
  frame_queue q;
  q.attach(sp.fd[0]);
  pipeline::histogram commit_to_send;
  std::vector<frame_queue::item> items;
  q.take(items);  // the client's thread writes (a pong, say)
  EXPECT_TRUE(q.push_message("a"));
  EXPECT_FALSE(q.write_now(commit_to_send)) << "the client's thread holds the socket and looks again";
  EXPECT_FALSE(q.release());
  q.take(items);
  ASSERT_EQ(items.size(), 1u);
  q.sent(items[0].charge);
  EXPECT_TRUE(q.release());

  auto big = block_of(1, 400, 1, 100);
  ASSERT_TRUE(q.push_events(big, frame_format::websocket, 0, 400));
  ASSERT_TRUE(q.write_now(commit_to_send));
  const size_t written = sp.drain().size();
  q.push_message("dropped");
  q.drop_unbegun();
  items.clear();
  q.take(items);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].bytes.size() + written, big->bytes(frame_format::websocket));
  EXPECT_EQ(q.bytes(), items[0].charge) << "the dropped message's charge came back";

  // A peer gone: the hub's write fails, and the client's thread is woken to find out.
  q.sent(items[0].charge);
  EXPECT_TRUE(q.release());
  ::close(sp.fd[1]);
  sp.fd[1] = -1;
  EXPECT_TRUE(q.push_message("x"));
  EXPECT_TRUE(q.write_now(commit_to_send));
  EXPECT_FALSE(q.empty());
}

// The hub and a client's thread taking turns on one socket, as they do under
// load: the hub queues reads and messages and writes what it may, the
// client's thread takes and writes what the socket did not take, and a
// reader drains the socket at an uneven pace, so both the hub's partial
// writes and the client's turns happen many times, and in every order.
// Whoever writes, the reader gets every byte once, in order, and every
// charge comes back.
TEST(FrameQueue, HubAndClientThreadsTakingTurnsDeliverEveryByteOnceInOrder) {
  socket_pair sp(4096);
  frame_queue q;
  q.attach(sp.fd[0]);
  pipeline::histogram commit_to_send;

  // The plan, fixed up front so that the expected bytes are known: reads
  // (spans of shared blocks, 1 to 30 rows of 30 to 200 bytes) and the
  // client's own messages, in push order.
  struct push {
    std::shared_ptr<const event_frames> block;
    size_t first = 0, last = 0;
    std::string message;
  };
  std::vector<push> plan;
  std::vector<int> pauses;
  std::string expected;
  uint64_t seed = 12345;
  auto next = [&seed](uint64_t n) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (seed >> 33) % n;
  };
  for (uint64_t tx = 1; tx <= 2500; ++tx) {
    pauses.push_back(static_cast<int>(next(4) == 0 ? next(400) : 0));
    if (next(8) == 0) {
      plan.push_back({nullptr, 0, 0, "<message " + std::to_string(tx) + ">"});
      expected += plan.back().message;
      continue;
    }
    const auto rows = static_cast<int64_t>(1 + next(30));
    auto block = block_of(tx, rows, 1, 30 + next(170));
    const size_t first = next(static_cast<size_t>(rows));
    const size_t last = first + 1 + next(static_cast<size_t>(rows) - first);
    expected += block->span(frame_format::websocket, first, last);
    plan.push_back({block, first, last, {}});
  }

  std::mutex mu;
  std::condition_variable cv;
  std::atomic<bool> hub_done{false};
  auto wake = [&] {
    std::lock_guard lock(mu);
    cv.notify_one();
  };
  std::atomic<int> hub_wakes{0}, client_turns{0};

  std::thread hub([&] {
    for (size_t i = 0; i < plan.size(); ++i) {
      const auto& p = plan[i];
      const bool was_empty = p.block ? q.push_events(p.block, frame_format::websocket, p.first, p.last)
                                     : q.push_message(p.message);
      if (was_empty && q.write_now(commit_to_send)) {
        hub_wakes.fetch_add(1);
        wake();
      }
      // Paced like reads (a fast hub only ever queues behind the client's thread).
      std::this_thread::sleep_for(std::chrono::microseconds(pauses[i]));
    }
    hub_done = true;
    wake();
  });

  std::thread client([&] {
    std::vector<frame_queue::item> items;
    for (;;) {
      if (q.release()) {
        std::unique_lock lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(2), [&] { return !q.empty() || hub_done.load(); });
      }
      const bool done = hub_done.load();
      items.clear();
      q.take(items);
      if (!items.empty()) client_turns.fetch_add(1);
      size_t charges = 0;
      for (const auto& it : items) {
        for (std::string_view rest = it.bytes; !rest.empty();) {
          ssize_t n = ::send(sp.fd[0], rest.data(), rest.size(), MSG_NOSIGNAL);
          if (n <= 0) return;
          rest.remove_prefix(static_cast<size_t>(n));
        }
        charges += it.charge;
      }
      q.sent(charges);
      if (done && items.empty() && q.release()) return;
    }
  });

  std::string got;
  got.reserve(expected.size());
  char buf[3000];
  for (size_t reads = 0; got.size() < expected.size(); ++reads) {
    pollfd pfd{sp.fd[1], POLLIN, 0};
    if (::poll(&pfd, 1, 10'000) != 1) break;  // nothing for 10 s: stuck
    ssize_t n = ::recv(sp.fd[1], buf, 1 + reads % sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
    if (reads % 16 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  // Whatever more comes (it must not) is read, so that no writer blocks on
  // a full socket.
  std::atomic<bool> joined{false};
  std::string extra;
  std::thread drainer([&] {
    while (!joined.load()) {
      pollfd pfd{sp.fd[1], POLLIN, 0};
      if (::poll(&pfd, 1, 10) != 1) continue;
      ssize_t n = ::recv(sp.fd[1], buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) extra.append(buf, static_cast<size_t>(n));
    }
  });
  hub.join();
  client.join();
  joined = true;
  drainer.join();
  extra += sp.drain();
  EXPECT_EQ(extra.size(), 0u) << "bytes beyond the plan";
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected) << "first difference at byte "
                               << (std::mismatch(got.begin(), got.end(), expected.begin()).first - got.begin());
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.bytes(), 0u) << "every charge came back";
  // Both writers had turns (else the test did not test the hand-over).
  EXPECT_GT(hub_wakes.load(), 10);
  EXPECT_GT(client_turns.load(), 10);
  std::cout << "hub wakes " << hub_wakes.load() << ", client turns " << client_turns.load() << ", "
            << expected.size() << " bytes\n";
}

}  // namespace
}  // namespace evpipe::read
