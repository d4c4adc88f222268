// nats-floor: the floor evpipe's JetStream drain is measured against
// (perf/nats_drain.sh, issue 14). It is what a user would write instead of
// evpipe to move a JetStream backlog into events_mirror with each message
// acked only after its row commits, and nothing more: K threads, each with
// its own libpq connection and its own pull subscription on one durable
// consumer, each looping
//   fetch up to B messages -> one binary COPY (topic, payload) of them,
//   which commits on its own -> ack each message.
// No parsing, validation, dedup, routing, metrics or backpressure: the
// messages' bytes go into the payload column as they came (jsonb checks
// them). The topic is the subject with '.' as '/', as evpipe stores it.
//
// It stops once --count messages are fetched and committed (a redelivery
// would be a second row with the same key, which the table's unique index
// refuses: the run then fails) and prints its own rate and CPU time; the
// script times it from the outside the same way it times evpipe (start of
// the process to the last row visible).

#include <libpq-fe.h>
#include <nats/nats.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "perf/copy_rows.h"
#include "stages/batch.h"

namespace {

struct options {
  std::string dsn, server, stream, durable = "floor", table = "events_mirror";
  int connections = 2;
  int fetch_batch = 512;
  int64_t max_ack_pending = 16384;
  uint64_t count = 0;
  int64_t fetch_timeout_ms = 2000;
};

struct shared_state {
  explicit shared_state(const options& opts) : o(opts) {}
  const options& o;
  jsCtx* js = nullptr;
  std::string copy_sql;
  std::atomic<uint64_t> fetched{0}, committed{0};
  std::atomic<bool> failed{false};
};

void fail(shared_state& sh, const std::string& what) {
  if (!sh.failed.exchange(true)) std::fprintf(stderr, "nats-floor: %s\n", what.c_str());
}

void drain(shared_state& sh) {
  const options& o = sh.o;
  PGconn* conn = PQconnectdb(o.dsn.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    fail(sh, std::string("cannot connect to PostgreSQL: ") + PQerrorMessage(conn));
    PQfinish(conn);
    return;
  }
  PQclear(PQexec(conn, "SET application_name = 'evpipe-nats-floor'"));
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = o.stream.c_str();
  so.Consumer = o.durable.c_str();
  natsSubscription* sub = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_PullSubscribe(&sub, sh.js, nullptr, o.durable.c_str(), nullptr, &so, &jerr);
  if (s != NATS_OK) {
    fail(sh, std::string("cannot bind the pull subscription: ") + natsStatus_GetText(s));
    PQfinish(conn);
    return;
  }
  std::string data, topic, why;
  while (!sh.failed.load()) {
    const uint64_t got = sh.fetched.load();
    if (got >= o.count) break;
    // Never ask for more than is left: a fetch waits for its whole batch.
    const int want = static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(o.fetch_batch), o.count - got));
    natsMsgList list{};
    s = natsSubscription_Fetch(&list, sub, want, o.fetch_timeout_ms, &jerr);
    if (s == NATS_TIMEOUT) continue;  // another thread took what was left
    if (s != NATS_OK) {
      fail(sh, std::string("fetch failed: ") + natsStatus_GetText(s));
      break;
    }
    sh.fetched.fetch_add(static_cast<uint64_t>(list.Count));
    data.clear();
    data.append(evpipe::stages::copy_format::header);
    for (int i = 0; i < list.Count; ++i) {
      natsMsg* m = list.Msgs[i];
      topic.assign(natsMsg_GetSubject(m));
      std::replace(topic.begin(), topic.end(), '.', '/');
      evpipe::stages::copy_format::append_event_row(data, topic,
                             std::string_view(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m))));
    }
    data.append(evpipe::stages::copy_format::trailer);
    if (!evpipe::perf::copy_commit(conn, sh.copy_sql, data, why)) {
      fail(sh, "COPY into " + o.table + " failed: " + why);
      natsMsgList_Destroy(&list);
      break;
    }
    for (int i = 0; i < list.Count; ++i) (void)natsMsg_Ack(list.Msgs[i], nullptr);
    sh.committed.fetch_add(static_cast<uint64_t>(list.Count));
    natsMsgList_Destroy(&list);
  }
  natsSubscription_Destroy(sub);
  PQfinish(conn);
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  CLI::App cli{
      "nats-floor: drains a JetStream durable consumer into events_mirror the plain way (K threads: fetch, one binary "
      "COPY that commits, then an ack per message): the floor for evpipe's JetStream drain"};
  cli.add_option("--dsn", o.dsn, "libpq connection string of the database holding the table")->required();
  cli.add_option("--server", o.server, "NATS server URL (nats://127.0.0.1:4222)")->required();
  cli.add_option("--stream", o.stream, "the JetStream stream")->required();
  cli.add_option("--durable", o.durable, "the durable pull consumer (made with explicit acks)")
      ->default_val("floor");
  cli.add_option("--table", o.table, "table with evpipe's events_mirror columns (topic, payload)")
      ->default_val("events_mirror");
  cli.add_option("--connections", o.connections, "threads, each a libpq connection and a pull subscription")
      ->default_val(2)->check(CLI::Range(1, 64));
  cli.add_option("--fetch-batch", o.fetch_batch, "messages per fetch, COPY and commit")->default_val(512)
      ->check(CLI::Range(1, 1 << 20));
  cli.add_option("--max-ack-pending", o.max_ack_pending, "the consumer's max_ack_pending when it is made")
      ->default_val(16384);
  cli.add_option("--count", o.count, "messages to drain")->required()->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
  CLI11_PARSE(cli, argc, argv);

  natsConnection* nc = nullptr;
  natsStatus s = natsConnection_ConnectTo(&nc, o.server.c_str());
  if (s != NATS_OK) {
    std::fprintf(stderr, "nats-floor: cannot connect to %s: %s\n", o.server.c_str(), natsStatus_GetText(s));
    return 1;
  }
  shared_state sh(o);
  sh.copy_sql = "COPY " + o.table + " (topic, payload) FROM STDIN (FORMAT binary)";
  s = natsConnection_JetStream(&sh.js, nc, nullptr);
  if (s != NATS_OK) {
    std::fprintf(stderr, "nats-floor: no JetStream context: %s\n", natsStatus_GetText(s));
    natsConnection_Destroy(nc);
    return 1;
  }
  // The durable: explicit acks, every message of the stream.
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = o.durable.c_str();
  cc.AckPolicy = js_AckExplicit;
  cc.DeliverPolicy = js_DeliverAll;
  cc.MaxAckPending = o.max_ack_pending;
  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  s = js_AddConsumer(&ci, sh.js, o.stream.c_str(), &cc, nullptr, &jerr);
  if (s != NATS_OK) {
    std::fprintf(stderr, "nats-floor: cannot make the durable consumer %s on %s: %s (JetStream error %d)\n",
                 o.durable.c_str(), o.stream.c_str(), natsStatus_GetText(s), static_cast<int>(jerr));
    jsCtx_Destroy(sh.js);
    natsConnection_Destroy(nc);
    return 1;
  }
  jsConsumerInfo_Destroy(ci);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < o.connections; ++i) threads.emplace_back(drain, std::ref(sh));
  for (auto& t : threads) t.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Acks are published asynchronously: send them before the connection goes.
  (void)natsConnection_FlushTimeout(nc, 5000);
  jsCtx_Destroy(sh.js);
  natsConnection_Destroy(nc);
  const uint64_t committed = sh.committed.load();
  std::printf("nats-floor  %s  connections %d  fetch_batch %d\n", o.table.c_str(), o.connections, o.fetch_batch);
  // Its own CPU, for the script (which cannot read it once the process is gone).
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                     static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  std::printf("  committed   %12llu  in %.2f s: %.0f rows/s\n", static_cast<unsigned long long>(committed), secs,
              secs > 0 ? static_cast<double>(committed) / secs : 0.0);
  std::printf("  cpu_seconds %12.3f\n", cpu);
  return sh.failed.load() ? 1 : 0;
}
