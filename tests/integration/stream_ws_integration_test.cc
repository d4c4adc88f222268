// The live stream over WebSocket (read/stream/ws_session) with Beast's
// client: subscribe with since = now delivers everything committed after
// caught_up; unsubscribe and subscribe again resume from the last event
// without a gap; bad messages are answered with an error and the connection
// stays usable; reconnecting with since = the last position repeats nothing.

#include <gtest/gtest.h>

#include <array>

#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "tests/integration/stream_ws_client.h"
#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

class StreamWs : public TcpPipeline {
 protected:
  void SetUp() override {
    TcpPipeline::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    tcp_port = free_port();
    stream_port = free_port();
    http_port = free_port();
    tuning t;
    t.linger_ms = 1;
    t.tcp_extra = "\n[stream]\nlisten = \"127.0.0.1:" + std::to_string(stream_port) +
                  "\"\npoll_ms = " + std::to_string(poll_ms) + "\nmax_filters = 4\nheartbeat_s = " + std::to_string(heartbeat_s) +
                  "\nmax_clients = " + std::to_string(max_clients) + "\n";
    evpipe = std::make_unique<evpipe_process>(config_for(db, tcp_port, http_port, t), "stream_ws");
    ASSERT_EQ(evpipe->run_command("migrate"), 0) << evpipe->log("migrate.log");
    evpipe->start(tcp_port);
    // The stream listens just after the sources.
    ASSERT_TRUE(eventually([&] {
      try {
        ::close(connect_loopback(stream_port));
        return true;
      } catch (const std::exception&) {
        return false;
      }
    }, 30s));
  }
  void produce(const std::string& prefix, int n, const std::string& kind_extra = "") {
    ndjson_client p(tcp_port);
    std::string data;
    for (int j = 0; j < n; ++j) data += valid_event(prefix + "-" + std::to_string(j), "x", kind_extra) + "\n";
    p.send_all(data);
    ASSERT_EQ(p.read_acks_until(static_cast<uint64_t>(n), 60s), static_cast<uint64_t>(n));
  }
  // Reads `n` events, checking the order; returns their keys.
  std::vector<std::string> events(ws_client& c, size_t n, std::string& last) {
    std::vector<std::string> keys;
    while (keys.size() < n) {
      auto m = c.next();
      if (!m) {
        ADD_FAILURE() << "no event after " << keys.size() << " of " << n;
        break;
      }
      if (field(*m, "type") != "event") continue;
      std::string pos = field(*m, "position");
      EXPECT_GT(pos, last) << *m;
      last = pos;
      keys.push_back(key_in(*m));
    }
    return keys;
  }
  double metric(const std::string& name) { return metric_value(http_get(http_port, "/metrics"), "taylor_stream_" + name); }
  uint16_t tcp_port = 0, stream_port = 0, http_port = 0;
  uint32_t heartbeat_s = 15;  // long: the tests above read only when they expect a message
  uint32_t poll_ms = 5;
  uint32_t max_clients = 64;
  std::unique_ptr<evpipe_process> evpipe;
};

// Two clients at most.
class StreamWsTwoClients : public StreamWs {
 protected:
  void SetUp() override {
    max_clients = 2;
    StreamWs::SetUp();
  }
};

// Heartbeats of one second: a client that stops reading stops answering pings.
class StreamWsHeartbeat : public StreamWs {
 protected:
  void SetUp() override {
    heartbeat_s = 1;
    StreamWs::SetUp();
  }
};

TEST_F(StreamWs, SubscribeNowDeliversEverythingCommittedAfterCaughtUp) {
  produce("old", 20);
  ws_client c(stream_port);
  c.send(R"({"type":"subscribe","topics":["tracker/events/#"],"since":"now"})");
  auto caught = c.next();
  ASSERT_TRUE(caught);
  ASSERT_EQ(field(*caught, "type"), "caught_up") << *caught;
  std::string last = field(*caught, "position");
  std::string caught_pos = last;
  produce("new", 300);
  // Exactly the rows after caught_up's position, in position order. That
  // may include some "old" rows: "now" is the visible edge, and a writing
  // transaction elsewhere in the cluster can hold committed rows behind it.
  std::string tx = std::to_string(std::stoull(caught_pos.substr(2, 16), nullptr, 16));
  std::string id = std::to_string(std::stoll(caught_pos.substr(18, 16), nullptr, 16));
  auto expected = db.column("SELECT payload->>'idempotency_key' FROM events_mirror WHERE (tx, id) > ('" + tx +
                            "'::xid8, " + id + ") ORDER BY tx, id");
  ASSERT_GE(expected.size(), 300u);
  auto keys = events(c, expected.size(), last);
  EXPECT_EQ(keys, expected);
}

TEST_F(StreamWs, UnsubscribeThenSubscribeResumesWithoutAGap) {
  ws_client c(stream_port);
  c.send(R"({"type":"subscribe","kinds":["project_created"],"since":"1-00000000000000000000000000000000"})");
  produce("a", 50);
  std::string last;
  auto first = events(c, 50, last);
  c.send(R"({"type":"unsubscribe","kinds":["project_created"]})");
  // An unsubscribe takes effect when the session reads it; the pong to a
  // ping sent after it says it has (the hub may write events to the socket
  // until then: docs/read.md).
  auto until_pong = [&] {  // a caught_up may come first, but no event
    c.send(R"({"type":"ping"})");
    for (;;) {
      auto m = c.next();
      ASSERT_TRUE(m);
      if (field(*m, "type") == "pong") break;
      ASSERT_EQ(field(*m, "type"), "caught_up") << *m;
    }
  };
  until_pong();
  produce("b", 50);  // while unsubscribed
  until_pong();
  c.send(R"({"type":"subscribe","kinds":["project_created"]})");  // no since: from the last event
  auto second = events(c, 50, last);
  std::set<std::string> all(first.begin(), first.end());
  all.insert(second.begin(), second.end());
  EXPECT_EQ(all.size(), 100u);
  for (const auto& k : second) EXPECT_EQ(k.rfind("b-", 0), 0u) << k;
}

// A subscribe while the connection is full (the client reads nothing, and
// more events come than the kernel's buffers hold, so the hub has left the
// rest to the session's thread, which waits for the socket): the new
// subscription resumes after the last event handed to the socket, so the
// client gets every event once, in order, in whole frames.
TEST_F(StreamWs, ASubscribeWhileTheSocketIsFullRepeatsAndSkipsNothing) {
  ws_client c(stream_port, 4096);
  c.send(R"({"type":"subscribe","kinds":["project_created"]})");
  auto caught = c.next();
  ASSERT_TRUE(caught);
  ASSERT_EQ(field(*caught, "type"), "caught_up") << *caught;
  const size_t n = events_past_the_send_buffer();
  produce("full", static_cast<int>(n));  // meanwhile the client reads nothing
  c.send(R"({"type":"subscribe","topics":["#"]})");  // every event: the same ones, resubscribed
  std::string last = field(*caught, "position");
  auto keys = events(c, n, last);
  std::set<std::string> unique(keys.begin(), keys.end());
  EXPECT_EQ(unique.size(), n) << "an event repeated or missing";
  EXPECT_EQ(keys.size(), n);
}

// Each subscribe adds events: kinds first, then topics, is "this kind
// anywhere, or anything there" (it used to narrow the stream to that kind
// there). An unsubscribe ends what it names and nothing else.
TEST_F(StreamWs, EachSubscribeAddsEventsAndAnUnsubscribeEndsOnlyWhatItNames) {
  ws_client c(stream_port);
  c.send(R"({"type":"subscribe","kinds":["alert"],"since":"now"})");
  auto caught = c.next();
  ASSERT_TRUE(caught);
  ASSERT_EQ(field(*caught, "type"), "caught_up") << *caught;
  std::string last = field(*caught, "position");
  c.send(R"({"type":"subscribe","topics":["lab/#"]})");
  // One line each: its key, its kind, its topic; committed in this order.
  auto send = [&](std::vector<std::array<std::string, 3>> lines) {
    for (const auto& [key, kind, topic] : lines) {
      std::string e = valid_event(key, "x", ",\"topic\":\"" + topic + "\"");
      e.replace(e.find("project_created"), 15, kind);
      ndjson_client p(tcp_port);
      p.send_all(e + "\n");
      ASSERT_EQ(p.read_acks_until(1, 60s), 1u);
    }
  };
  // `expected` events, then whatever else comes before the answer to a
  // ping (an event that should not have come).
  auto keys_then_pong = [&](size_t expected) {
    std::vector<std::string> keys = events(c, expected, last);
    c.send(R"({"type":"ping"})");
    for (;;) {
      auto m = c.next();
      if (!m) {
        ADD_FAILURE() << "no pong";
        break;
      }
      if (field(*m, "type") == "pong") break;
      if (field(*m, "type") == "event") keys.push_back(key_in(*m));  // one that should not have come
    }
    return keys;
  };
  send({{"s1", "alert", "plant/a"}, {"s2", "project_created", "lab/1"}, {"s3", "project_created", "plant/a"},
        {"s4", "alert", "lab/2"}});
  EXPECT_EQ(keys_then_pong(3), (std::vector<std::string>{"s1", "s2", "s4"}));
  c.send(R"({"type":"unsubscribe","kinds":["alert"]})");
  c.send(R"({"type":"ping"})");  // answered once the unsubscribe is in
  for (auto m = c.next(); m && field(*m, "type") != "pong"; m = c.next()) {
  }
  send({{"u1", "alert", "plant/a"}, {"u2", "project_created", "lab/1"}, {"u3", "alert", "lab/3"}});
  EXPECT_EQ(keys_then_pong(2), (std::vector<std::string>{"u2", "u3"}))
      << "alerts elsewhere ended; lab/# still takes every kind";
}

TEST_F(StreamWs, BadMessagesGetAnErrorAndTheConnectionStays) {
  ws_client c(stream_port);
  for (const char* bad : {"not json", "[1,2]", R"({"kinds":[]})", R"({"type":"shout"})",
                          R"({"type":"subscribe","topics":["a/#/b"]})", R"({"type":"subscribe","kinds":"k"})",
                          R"({"type":"subscribe","since":"yesterday"})",
                          R"({"type":"subscribe","kinds":["a","b","c"],"topics":["x","y"]})"}) {
    c.send(bad);
    auto m = c.next();
    ASSERT_TRUE(m) << bad;
    EXPECT_EQ(field(*m, "type"), "error") << bad << " -> " << *m;
    EXPECT_FALSE(field(*m, "message").empty()) << *m;
  }
  // A well-formed position no transaction of this database has had.
  c.send(R"({"type":"subscribe","since":"1-7fffffffffffff000000000000000001"})");
  auto unknown = c.next();
  ASSERT_TRUE(unknown);
  EXPECT_EQ(field(*unknown, "type"), "error") << *unknown;
  EXPECT_NE(unknown->find("unknown position"), std::string::npos) << *unknown;
  c.send(R"({"type":"unsubscribe"})");
  c.send(R"({"type":"subscribe","since":"now"})");
  auto caught = c.next();
  ASSERT_TRUE(caught);
  EXPECT_EQ(field(*caught, "type"), "caught_up") << *caught;
  produce("after-errors", 5);
  std::string last = field(*caught, "position");
  EXPECT_EQ(events(c, 5, last).size(), 5u);
}

// Rows after a client's position that retention dropped (the partition
// maintainer records them in evpipe_retention_marks, as done by hand here;
// Partitions.RetentionRecordsWhatItDroppedAndAResumeFromBeforeItIsRefused
// tests the recording): the subscribe gets an error naming what went and
// where to resume, the connection stays, and from there every kept event
// comes once, in order.
TEST_F(StreamWs, AResumeFromBeforeWhatRetentionDroppedIsRefusedWithWhereToResume) {
  produce("ret", 20);
  std::vector<std::string> keys, positions;
  {
    ws_client c(stream_port);
    c.send(R"({"type":"subscribe","since":"1-00000000000000000000000000000000"})");
    std::string last = "1-00000000000000000000000000000000";
    while (keys.size() < 20) {
      auto m = c.next();
      ASSERT_TRUE(m) << keys.size();
      if (field(*m, "type") != "event") continue;
      positions.push_back(field(*m, "position"));
      keys.push_back(key_in(*m));
    }
  }
  // "Retention" takes the first 10 in position order.
  std::string in;
  for (size_t i = 0; i < 10; ++i) in += std::string(i ? "," : "") + "'" + keys[i] + "'";
  db.exec("INSERT INTO evpipe_retention_marks (table_name, dropped, rows, last_tx, last_id) SELECT 'events_mirror', "
          "'events_mirror_p20261020', 10, tx, id FROM events_mirror WHERE idempotency_key = '" + keys[9] + "'; "
          "DELETE FROM events_mirror WHERE idempotency_key IN (" + in + ")");
  ws_client c(stream_port);
  c.send(R"({"type":"subscribe","since":")" + positions[2] + "\"}");
  auto refused = c.next();
  ASSERT_TRUE(refused);
  EXPECT_EQ(field(*refused, "type"), "error") << *refused;
  EXPECT_NE(refused->find("events after position " + positions[2] + " are gone: [storage] retention dropped them (10 "
                          "rows, events_mirror_p20261020, at 20"),
            std::string::npos)
      << *refused;
  EXPECT_NE(refused->find("), up to position " + positions[9] + ". Resume from \\\"" + positions[9] + "\\\""),
            std::string::npos)
      << *refused;
  c.send(R"({"type":"subscribe","since":")" + positions[9] + "\"}");
  std::string last = positions[9];
  EXPECT_EQ(events(c, 10, last), std::vector<std::string>(keys.begin() + 10, keys.end()));
  auto caught = c.next();
  ASSERT_TRUE(caught);
  EXPECT_EQ(field(*caught, "type"), "caught_up") << *caught;
}

TEST_F(StreamWs, ReconnectingFromTheLastPositionRepeatsNothing) {
  std::thread writer([&] { produce("r", 2000); });
  std::vector<std::string> keys;
  std::string last = "1-00000000000000000000000000000000";
  for (int round = 0; round < 5; ++round) {
    ws_client c(stream_port);
    c.send(R"({"type":"subscribe","since":")" + last + "\"}");
    auto got = events(c, round == 4 ? 2000 - keys.size() : 150, last);
    keys.insert(keys.end(), got.begin(), got.end());
  }
  writer.join();
  std::set<std::string> unique(keys.begin(), keys.end());
  EXPECT_EQ(unique.size(), 2000u);
  EXPECT_EQ(keys.size(), 2000u);
}

// The server answers a client's WebSocket ping with a pong of the same
// payload (RFC 6455 5.5.3), ahead of the answer to a message sent after it,
// and the connection goes on.
TEST_F(StreamWs, PingsFromTheClientAreAnsweredWithTheirPayload) {
  ws_client c(stream_port);
  std::vector<std::string> pongs;
  c.ping("hb-1", pongs);
  c.send(R"({"type":"ping"})");
  auto m = c.next();
  ASSERT_TRUE(m);
  EXPECT_EQ(field(*m, "type"), "pong") << *m;
  EXPECT_EQ(pongs, std::vector<std::string>{"hb-1"});
  c.send(R"({"type":"subscribe","since":"now"})");
  auto caught = c.next();
  ASSERT_TRUE(caught);
  EXPECT_EQ(field(*caught, "type"), "caught_up") << *caught;
}

// A row with transport headers (the nullable headers column) carries them
// as "headers" after "event"; a row without has none. Rows of another writer
// (plain INSERTs here) stream like evpipe's own.
TEST_F(StreamWs, EventsCarryTheirTransportHeaders) {
  ws_client c(stream_port);
  c.send(R"({"type":"subscribe","since":"now"})");
  auto caught = c.next();
  ASSERT_TRUE(caught && field(*caught, "type") == "caught_up") << caught.value_or("(none)");
  db.exec("INSERT INTO events_mirror (topic, payload, headers) VALUES "
          "('t/h', '{\"idempotency_key\": \"h-1\"}', "
          "'{\"content_type\": \"text/plain\", \"user_properties\": [[\"tenant\", \"acme\"]]}'), "
          "('t/h', '{\"idempotency_key\": \"h-2\"}', NULL)");
  std::vector<std::string> got;
  while (got.size() < 2) {
    auto m = c.next();
    ASSERT_TRUE(m) << "after " << got.size();
    if (field(*m, "type") == "event") got.push_back(*m);
  }
  EXPECT_NE(got[0].find(R"("event":{"idempotency_key": "h-1"},"headers":{"content_type": "text/plain", "user_properties": [["tenant", "acme"]]}})"),
            std::string::npos) << got[0];
  EXPECT_EQ(got[1].find("\"headers\""), std::string::npos) << got[1];
}

// Clients that start from different positions (and one with a filter of its
// own) at the same time: catch-up reads are shared by clients with the same
// filter (one page from the lowest position, each taking what follows its
// own), and every client still gets exactly the events after its position,
// once each, in order, across the seam to live delivery while events keep
// coming.
TEST_F(StreamWs, ClientsFromDifferentPositionsEachGetExactlyWhatFollowsTheirs) {
  produce("early", 1300);
  const std::string start = "1-00000000000000000000000000000000";
  std::vector<std::pair<std::string, std::string>> all;  // (position, key) of every row, in order
  {
    ws_client first(stream_port);
    first.send(R"({"type":"subscribe","since":")" + start + "\"}");
    while (all.size() < 1300) {
      auto m = first.next();
      ASSERT_TRUE(m) << "after " << all.size();
      if (field(*m, "type") == "event") all.emplace_back(field(*m, "position"), key_in(*m));
    }
  }
  const std::vector<size_t> from = {0, 1, 100, 640, 1250, 1299};
  std::vector<std::unique_ptr<ws_client>> clients;
  for (size_t f : from) {
    clients.push_back(std::make_unique<ws_client>(stream_port));
    clients.back()->send(R"({"type":"subscribe","since":")" + (f == 0 ? start : all[f - 1].first) + "\"}");
  }
  ws_client filtered(stream_port);
  filtered.send(R"({"type":"subscribe","topics":["no/such/topic"],"since":")" + start + "\"}");
  std::thread writer([&] { produce("late", 400); });
  for (size_t i = 0; i < from.size(); ++i) {
    std::string last = i == 0 || from[i] == 0 ? start : all[from[i] - 1].first;
    auto keys = events(*clients[i], 1300 - from[i] + 400, last);
    ASSERT_EQ(keys.size(), 1300 - from[i] + 400) << "client from " << from[i];
    for (size_t j = 0; j + from[i] < 1300; ++j) ASSERT_EQ(keys[j], all[from[i] + j].second) << from[i] << " " << j;
    for (size_t j = 1300 - from[i]; j < keys.size(); ++j) EXPECT_EQ(keys[j].rfind("late-", 0), 0u) << keys[j];
    std::set<std::string> unique(keys.begin(), keys.end());
    EXPECT_EQ(unique.size(), keys.size()) << "client from " << from[i];
  }
  writer.join();
  // The filtered client matched nothing, and is live.
  auto m = filtered.next(5s);
  ASSERT_TRUE(m);
  EXPECT_EQ(field(*m, "type"), "caught_up") << *m;
}

// The tail polls only every 10 s: events committed by this process's own
// shards still arrive at once, because each commit wakes the tail. Five
// rounds of one event each (sent, acked after commit, received) all end well
// before the first poll could have found them (without the wake, the first
// round alone waits for the poll).
class StreamWsSlowPoll : public StreamWs {
 protected:
  void SetUp() override {
    poll_ms = 10'000;
    StreamWs::SetUp();
  }
};

TEST_F(StreamWsSlowPoll, OwnCommitsWakeTheTailBeforeItsPoll) {
  ws_client c(stream_port);
  c.send(R"({"type":"subscribe","since":"now"})");
  auto caught = c.next();
  ASSERT_TRUE(caught);
  ASSERT_EQ(field(*caught, "type"), "caught_up") << *caught;
  std::string last = field(*caught, "position");
  auto t0 = std::chrono::steady_clock::now();
  for (int round = 0; round < 5; ++round) {
    produce("woken-" + std::to_string(round), 1);
    auto keys = events(c, 1, last);
    ASSERT_EQ(keys, std::vector<std::string>{"woken-" + std::to_string(round) + "-0"});
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "events waited for the poll, not the commit";
  // Each was timed from its commit to its write to the socket (counted when
  // the write completes, which the client may see after the bytes).
  EXPECT_TRUE(eventually([&] { return metric("commit_to_send_seconds_count") >= 5; }, 10s))
      << metric("commit_to_send_seconds_count");
}

// A client that resumes from a position the tail has not reached yet (here:
// rows of another writer, which the tail finds only at its poll, 10 s; in
// use: a position another evpipe's stream or a replay gave the client) gets
// only the rows after it, and a caught_up that does not go back. Before the
// fix it was made live at the tail at once (caught_up before its position)
// and then handed the rows between the tail and its position again.
TEST_F(StreamWsSlowPoll, AResumePositionAheadOfTheTailRepeatsNothing) {
  ws_client first(stream_port);
  first.send(R"({"type":"subscribe","since":"now"})");
  auto caught = first.next();  // the tail is at the live edge now
  ASSERT_TRUE(caught);
  ASSERT_EQ(field(*caught, "type"), "caught_up") << *caught;
  db.exec("INSERT INTO events_mirror (topic, payload) SELECT 'other/writer', "
          "jsonb_build_object('idempotency_key', 'ahead-' || g) FROM generate_series(1, 10) g");
  auto positions = db.column("SELECT '1-' || lpad(to_hex(tx::text::bigint), 16, '0') || lpad(to_hex(id), 16, '0') "
                             "FROM events_mirror ORDER BY tx, id");
  ASSERT_EQ(positions.size(), 10u);
  const std::string p5 = positions[4];
  ws_client c(stream_port);
  c.send(R"({"type":"subscribe","since":")" + p5 + "\"}");
  std::vector<std::string> keys;
  std::string caught_at;
  auto deadline = std::chrono::steady_clock::now() + 25s;
  while ((caught_at.empty() || keys.size() < 5) && std::chrono::steady_clock::now() < deadline) {
    auto m = c.next(25s);
    if (!m) break;
    if (field(*m, "type") == "caught_up") {
      caught_at = field(*m, "position");
      EXPECT_GE(caught_at, p5) << "caught_up went back before the client's position";
    } else if (field(*m, "type") == "event") {
      EXPECT_GT(field(*m, "position"), p5) << *m;
      keys.push_back(key_in(*m));
    }
  }
  EXPECT_FALSE(caught_at.empty());
  EXPECT_EQ(keys, (std::vector<std::string>{"ahead-6", "ahead-7", "ahead-8", "ahead-9", "ahead-10"}));
  // Nothing more (a repeat would come with the tail's next read).
  EXPECT_FALSE(c.next(500ms)) << "a message after the five";
}

// Idle stream clients cost nothing between heartbeats: their threads sleep
// until a frame, a heartbeat (15 s here) or the shutdown, instead of waking
// to look for a stop. 24 WebSocket and 24 SSE clients, subscribed and idle:
// their threads (the ones that appeared when they connected) are switched in
// and out a few times over 2 s at most (when each looked for a stop every
// 100 ms: about 20 times each, 960 in all). Then SIGTERM ends every one of
// them at once, not at their next heartbeat, and evpipe exits cleanly within
// seconds (its stop joins the clients' threads).
TEST_F(StreamWsSlowPoll, IdleClientsSleepUntilTheirHeartbeatAndAllEndAtShutdown) {
  constexpr int each = 24;
  const pid_t pid = evpipe->pid();
  const auto before = context_switches_by_thread(pid);
  std::vector<std::unique_ptr<ws_client>> ws;
  std::vector<std::unique_ptr<sse_client>> sse;
  for (int i = 0; i < each; ++i) {
    ws.push_back(std::make_unique<ws_client>(stream_port));
    ws.back()->send(R"({"type":"subscribe","since":"now"})");
    auto caught = ws.back()->next(10s);
    ASSERT_TRUE(caught);
    ASSERT_EQ(field(*caught, "type"), "caught_up") << *caught;
    sse.push_back(std::make_unique<sse_client>(stream_port, "?since=now"));
    ASSERT_NE(sse.back()->head().find("200 OK"), std::string::npos);
    auto f = sse.back()->next(10s);
    ASSERT_TRUE(f);
    ASSERT_EQ(f->event, "caught_up");
  }
  std::this_thread::sleep_for(300ms);
  auto new_threads = [&](const std::map<pid_t, uint64_t>& now) {
    std::map<pid_t, uint64_t> out;
    for (const auto& [tid, n] : now) {
      if (!before.contains(tid)) out[tid] = n;
    }
    return out;
  };
  const auto idle_start = new_threads(context_switches_by_thread(pid));
  ASSERT_GE(idle_start.size(), size_t{2 * each}) << "a thread per client";
  std::this_thread::sleep_for(2s);
  const auto idle_end = context_switches_by_thread(pid);
  uint64_t switches = 0;
  for (const auto& [tid, n] : idle_start) {
    if (auto it = idle_end.find(tid); it != idle_end.end()) switches += it->second - n;
  }
  EXPECT_LT(switches, uint64_t{2 * each}) << "the " << idle_start.size() << " client threads were switched in "
                                           << switches << " times over 2 s of idling";

  const auto stop = std::chrono::steady_clock::now();
  evpipe->kill(SIGTERM);
  for (auto& c : ws) EXPECT_TRUE(c->closed_within(10s));
  for (auto& c : sse) (void)c->rest(10s);  // returns when the server closes, or after 10 s
  EXPECT_EQ(evpipe->wait(30s), 0) << evpipe->log();
  // The exit waits for every client's thread to end.
  const auto exited = std::chrono::steady_clock::now() - stop;
  EXPECT_LT(exited, 5s) << "evpipe exited " << std::chrono::duration_cast<std::chrono::milliseconds>(exited).count()
                        << " ms after SIGTERM (a heartbeat is 15 s)";
}

// A client that stops answering pings is closed after its next missed
// heartbeat and counted by reason; one that keeps reading (Beast answers
// pings while it reads) stays connected.
TEST_F(StreamWsHeartbeat, AClientThatIgnoresPingsIsClosedAndCounted) {
  ASSERT_EQ(metric("disconnects_total{reason=\"heartbeat_missed\"}"), 0);
  ws_client deaf(stream_port), alive(stream_port);
  for (ws_client* c : {&deaf, &alive}) {
    c->send(R"({"type":"subscribe","since":"now"})");
    auto caught = c->next();
    ASSERT_TRUE(caught);
    ASSERT_EQ(field(*caught, "type"), "caught_up") << *caught;
  }
  // `deaf` reads nothing for 4 heartbeats while `alive` keeps reading
  // (Beast answers pings while a read is under way).
  for (int i = 0; i < 8; ++i) {
    alive.send(R"({"type":"ping"})");
    auto m = alive.next(10s);
    ASSERT_TRUE(m);
    ASSERT_EQ(field(*m, "type"), "pong") << *m;
    std::this_thread::sleep_for(500ms);
  }
  EXPECT_TRUE(eventually([&] { return metric("disconnects_total{reason=\"heartbeat_missed\"}") == 1; }, 10s))
      << http_get(http_port, "/metrics");
  EXPECT_TRUE(deaf.closed_within(5s));
  // The one that answered is still subscribed and served.
  produce("after-heartbeats", 3);
  alive.send(R"({"type":"ping"})");
  bool pong = false;
  for (int i = 0; i < 10 && !pong; ++i) {
    auto m = alive.next(10s);
    ASSERT_TRUE(m);
    pong = field(*m, "type") == "pong";
  }
  EXPECT_TRUE(pong);
  EXPECT_EQ(metric("disconnects_total{reason=\"heartbeat_missed\"}"), 1);
  EXPECT_EQ(metric("clients"), 1);
}

// max_clients holds for WebSocket clients, and a client whose connection has
// closed (its close frame answered) can connect again at once: the server frees
// the slot before its close frame goes out, not after.
TEST_F(StreamWsTwoClients, MaxClientsRefusesTheThirdAndAClosedClientCanReconnectAtOnce) {
  auto b = std::make_unique<ws_client>(stream_port);
  auto a = std::make_unique<ws_client>(stream_port);
  try {
    ws_client third(stream_port);
    ADD_FAILURE() << "a third client was accepted with max_clients = 2";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("declined"), std::string::npos) << e.what();  // Beast: upgrade declined
  }
  for (int i = 0; i < 20; ++i) {
    a->close();
    a.reset();
    a = std::make_unique<ws_client>(stream_port);  // throws if the old connection still held its slot
    a->send(R"({"type":"subscribe","since":"now"})");
    auto caught = a->next(10s);
    ASSERT_TRUE(caught);
    ASSERT_EQ(field(*caught, "type"), "caught_up") << *caught;
  }
}


}  // namespace
}  // namespace evpipe::testing
