// io/sources/nats/nats_fetch.cc against Debian's nats-server and libnats
// 3.4.1: messages a pull request delivers after its fetch gave up stay held
// by the subscription, and the next natsSubscription_Fetch of that library
// then runs past its array (nats.c #749; the SIGSEGVs of docs/nats.md).
// fetch_messages() must hand back at most `batch` real deliveries per call,
// each once, whatever late deliveries arrive before or during the call.

#include <gtest/gtest.h>
#include <nats/nats.h>

#include <cstring>
#include <set>
#include <thread>

#include "io/sources/nats/nats_fetch.h"
#include "tests/support/harness.h"
#include "tests/support/nats_server.h"

namespace evpipe::testing {
namespace {

// A pull request of the kind a fetch leaves behind when it times out before
// the server is done with it, sent to the subscription's own inbox.
void late_pull_request(natsConnection* nc, natsSubscription* sub, int batch) {
  std::string body = "{\"batch\":" + std::to_string(batch) + "}";
  ASSERT_EQ(natsConnection_PublishRequestString(nc, "$JS.API.CONSUMER.MSG.NEXT.LATE.d", natsSubscription_GetSubject(sub),
                                                body.c_str()),
            NATS_OK);
  ASSERT_EQ(natsConnection_Flush(nc), NATS_OK);
}

int held(natsSubscription* sub) {
  int msgs = 0, bytes = 0;
  natsSubscription_GetPending(sub, &msgs, &bytes);
  return msgs;
}

TEST(NatsFetch, LateDeliveriesBeforeAndDuringAFetchNeverOverrunIt) {
  if (::access(env_or("EVPIPE_TEST_NATS_SERVER", "/usr/sbin/nats-server").c_str(), X_OK) != 0) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "nats-server is not installed";
    GTEST_SKIP() << "nats-server is not installed (scripts/test.sh installs it)";
  }
  constexpr int total = 20, batch = 4;
  nats_server server("fetch");
  nats_client admin(server.url());
  admin.add_stream("LATE", "late.>");
  std::vector<std::pair<std::string, std::string>> msgs;
  for (int i = 0; i < total; ++i) msgs.emplace_back("late.x", "m" + std::to_string(i));
  admin.publish_async(msgs);
  admin.add_consumer("LATE", "d", 30'000);

  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&nc, server.url().c_str()), NATS_OK);
  ASSERT_EQ(natsConnection_JetStream(&js, nc, nullptr), NATS_OK);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = "LATE";
  so.Consumer = "d";
  natsSubscription* sub = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  ASSERT_EQ(js_PullSubscribe(&sub, js, "late.>", "d", nullptr, &so, &jerr), NATS_OK);

  // Three late deliveries held before the first fetch: more than half of its
  // batch, the case libnats 3.4.1 gets wrong.
  late_pull_request(nc, sub, 3);
  for (auto until = std::chrono::steady_clock::now() + 5s; held(sub) < 3 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(held(sub), 3);
  // And another late request's deliveries while a fetch waits.
  std::thread later([&] {
    std::this_thread::sleep_for(300ms);
    late_pull_request(nc, sub, 5);
  });

  std::set<uint64_t> seqs;
  uint64_t held_taken = 0;
  int calls = 0;
  for (auto until = std::chrono::steady_clock::now() + 20s;
       static_cast<int>(seqs.size()) < total && std::chrono::steady_clock::now() < until;) {
    std::vector<natsMsg*> out;
    natsStatus s = io::fetch_messages(sub, batch, 1000, out, &held_taken);
    ++calls;
    ASSERT_TRUE(s == NATS_OK || s == NATS_TIMEOUT) << natsStatus_GetText(s);
    ASSERT_LE(out.size(), static_cast<size_t>(batch)) << "a fetch of " << batch << " returned " << out.size();
    for (natsMsg* m : out) {
      const char* reply = natsMsg_GetReply(m);
      ASSERT_NE(reply, nullptr);
      ASSERT_EQ(std::strncmp(reply, "$JS.ACK.", 8), 0) << reply;
      jsMsgMetaData* meta = nullptr;
      ASSERT_EQ(natsMsg_GetMetaData(&meta, m), NATS_OK);
      EXPECT_TRUE(seqs.insert(meta->Sequence.Stream).second) << "stream seq " << meta->Sequence.Stream << " twice";
      jsMsgMetaData_Destroy(meta);
      EXPECT_EQ(natsMsg_Ack(m, nullptr), NATS_OK);
      natsMsg_Destroy(m);
    }
  }
  later.join();
  EXPECT_EQ(seqs.size(), static_cast<size_t>(total)) << "after " << calls << " fetches";
  EXPECT_GE(held_taken, 3u) << "the held deliveries were not taken one by one";
  natsConnection_Flush(nc);
  for (auto until = std::chrono::steady_clock::now() + 5s;
       admin.consumer("LATE", "d").ack_pending != 0 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(admin.consumer("LATE", "d").ack_pending, 0);
  natsSubscription_Destroy(sub);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
}

}  // namespace
}  // namespace evpipe::testing
