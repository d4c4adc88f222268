#pragma once
// What the partitioned-table tests share (partitions_integration_test.cc,
// partitions_dedup_integration_test.cc): the [storage] section, events, and
// the fixture that sends them and runs evpipe's maintenance round itself.

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "io/postgres/partitions.h"
#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {

inline std::string storage(const std::string& extra = "") {
  return "[storage]\npartition = \"day\"\n" + extra;
}

inline std::string events(int first, int last, const std::string& prefix = "k") {
  std::string out;
  for (int i = first; i < last; ++i) out += valid_event(prefix + std::to_string(i)) + "\n";
  return out;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class Partitions : public TcpPipeline {
 protected:
  void send(uint16_t port, const std::string& data, evpipe_process& evp) {
    const uint64_t n = static_cast<uint64_t>(std::count(data.begin(), data.end(), '\n'));
    ndjson_client producer(port);
    producer.send_all(data);
    ASSERT_EQ(producer.read_acks_until(n, 60s), n) << evp.log();
  }
  // One maintenance round on a connection of the test's schema.
  // With a memo, as the maintenance thread runs them (only sweeps a key
  // table that may hold keys to prune); without, every round sweeps.
  io::partition_round maintain(uint64_t retention_s, io::key_sweep_memo* memo = nullptr) {
    io::pg_connection conn;
    EXPECT_TRUE(conn.connect(db.dsn(), "partitions-test").ok);
    io::partition_round done;
    io::partition_options o;
    o.unit = "day";
    o.retention_s = retention_s;
    o.prune_pages = 2;  // several statements per sweep, even for a few keys
    auto st = io::partition_maintainer::maintain_once(conn, o, done, memo);
    EXPECT_TRUE(st.ok) << st.sqlstate << " " << st.message;
    return done;
  }
  // Partitions of events_mirror from 50 to 40 days ago (events_mirror_a) and
  // from 40 to `b_ends` days ago (events_mirror_b).
  void old_partitions(int b_ends) {
    db.exec("CREATE TABLE events_mirror_a PARTITION OF events_mirror FOR VALUES FROM (now() - interval '50 days') "
            "TO (now() - interval '40 days')");
    db.exec("CREATE TABLE events_mirror_b PARTITION OF events_mirror FOR VALUES FROM (now() - interval '40 days') "
            "TO (now() - interval '" + std::to_string(b_ends) + " days')");
  }
  // A row `days` old and its key, in one implicit transaction: the row and
  // its key share now(), as when evpipe writes them.
  void store_old(const std::string& key, int days) {
    const std::string at = "now() - interval '" + std::to_string(days) + " days'";
    db.exec("INSERT INTO events_mirror (topic, payload, created_at) VALUES ('tracker/events/it', '" +
            valid_event(key) + "', " + at + "); INSERT INTO evpipe_mirror_keys (tenant_id, idempotency_key, "
            "created_at) VALUES ('', '" + key + "', " + at + ")");
  }
  long keys_stored_twice() {
    return db.count("SELECT count(*) FROM (SELECT 1 FROM events_mirror WHERE idempotency_key IS NOT NULL GROUP BY tenant_id, idempotency_key "
                    "HAVING count(*) > 1) d");
  }
};

}  // namespace evpipe::testing
