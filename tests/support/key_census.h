#pragma once
// The "one row per key" checks of the tests where several evpipe processes
// (or one process killed and restarted) write one events_mirror: the NATS
// cluster and many-processes tests and tests/integration/many_processes_*.
// They count rows per idempotency key once the sources have settled, so an
// exact comparison is meaningful.

#include <gtest/gtest.h>

#include <string>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {

// events_mirror's rows per idempotency key, for the keys LIKE `like`.
struct key_census {
  long rows = 0;        // rows with such a key
  long keys = 0;        // distinct such keys
  long keys_twice = 0;  // keys with more than one row (the unique index forbids them)
  long dead_letters = 0;  // rows in dlq_events, of any key
};

inline key_census count_keys(test_db& db, const std::string& like) {
  const std::string where = " FROM events_mirror WHERE idempotency_key LIKE '" + like + "'";
  key_census c;
  c.rows = db.count("SELECT count(*)" + where);
  c.keys = db.count("SELECT count(DISTINCT idempotency_key)" + where);
  c.keys_twice = db.count("SELECT count(*) FROM (SELECT idempotency_key" + where + " GROUP BY 1 HAVING count(*) > 1) d");
  c.dead_letters = db.count("SELECT count(*) FROM dlq_events");
  return c;
}

// Success when exactly `expected` keys LIKE `like` have a row each, one row
// per key, and nothing was dead-lettered; else says what differs.
inline ::testing::AssertionResult each_key_once(test_db& db, const std::string& like, long expected) {
  key_census c = count_keys(db, like);
  if (c.rows == expected && c.keys == expected && c.keys_twice == 0 && c.dead_letters == 0) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "keys LIKE '" << like << "': " << c.rows << " rows, " << c.keys
                                       << " distinct keys (expected " << expected << " of each), " << c.keys_twice
                                       << " keys with more than one row, " << c.dead_letters << " dead letters";
}

// How many of the keys `<run>-<from>` .. `<run>-<to - 1>` have no row: the
// acked events a test requires to be stored.
inline long missing_keys(test_db& db, const std::string& run, long from, long to) {
  if (to <= from) return 0;
  return db.count("SELECT count(*) FROM generate_series(" + std::to_string(from) + ", " + std::to_string(to - 1) +
                  ") g WHERE NOT EXISTS (SELECT 1 FROM events_mirror WHERE idempotency_key = '" + run +
                  "-' || g)");
}

// A sample of the /metrics of the evpipe whose HTTP port is `port`.
inline double metric_of(uint16_t port, const std::string& sample) {
  return metric_value(http_get(port, "/metrics"), sample);
}

}  // namespace evpipe::testing
