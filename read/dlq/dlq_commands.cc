#include "read/dlq/dlq_commands.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "io/postgres/partitions.h"
#include "io/postgres/pg_connection.h"
#include "read/dlq/dlq_select.h"
#include "read/table_reader.h"
#include "stages/topic_filter.h"

namespace evpipe::read {

namespace {

// One dead letter as a JSON object, built by PostgreSQL so that every value
// is quoted correctly; raw bytes (events that were not JSON) in bytea's
// escape form, which is ASCII; the transport's headers (null for none).
std::string row_json(const dlq_session& db) {
  return "json_build_object('id', id, 'created_at', created_at, 'reason', reason_code, 'topic', original_topic, "
         "'message', failure_reason, 'payload', payload, 'raw', encode(raw, 'escape'), 'headers', " +
         db.headers_column() + ")";
}

std::string clip(std::string_view s, size_t n) {
  std::string out;
  for (char c : s) {
    if (out.size() >= n) return out.substr(0, n - 3) + "...";
    out += (c == '\n' || c == '\t') ? ' ' : c;
  }
  return out;
}

}  // namespace

int run_dlq_list(const config::settings& s, const dlq_options& o) {
  dlq_session db;
  std::string where;
  if (int rc = prepare_dlq(s, o, db, where)) return rc;
  std::string sql = "SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                    "COALESCE(reason_code, ''), original_topic, failure_reason, " + row_json(db) +
                    "::text FROM " + db.table + " WHERE " + where + " ORDER BY id DESC" +
                    (o.limit ? " LIMIT " + std::to_string(o.limit) : "");
  io::pg_result r;
  if (auto st = db.conn.query(sql.c_str(), r); !st.ok) return report_dlq_failure(st);
  int n = PQntuples(r.get());
  if (o.json) {
    for (int i = 0; i < n; ++i) std::printf("%s\n", PQgetvalue(r.get(), i, 5));
    return 0;
  }
  std::printf("%-10s %-20s %-24s %-40s %s\n", "ID", "CREATED (UTC)", "REASON", "TOPIC", "MESSAGE");
  for (int i = 0; i < n; ++i) {
    std::printf("%-10s %-20s %-24s %-40s %s\n", PQgetvalue(r.get(), i, 0), PQgetvalue(r.get(), i, 1),
                clip(PQgetvalue(r.get(), i, 2), 24).c_str(), clip(PQgetvalue(r.get(), i, 3), 40).c_str(),
                clip(PQgetvalue(r.get(), i, 4), 70).c_str());
  }
  std::fprintf(stderr, "%d dead letters%s\n", n, o.limit && static_cast<uint64_t>(n) == o.limit ? " (the newest; --limit 0 for all)" : "");
  return 0;
}

int run_dlq_show(const config::settings& s, const dlq_options& o) {
  dlq_session db;
  std::string where;
  if (int rc = prepare_dlq(s, o, db, where)) return rc;
  std::string sql = std::string("SELECT ") + (o.json ? "" : "jsonb_pretty(") + row_json(db) + (o.json ? "::text" : "::jsonb)") +
                    " FROM " + db.table + " WHERE id = " + std::to_string(o.id);
  io::pg_result r;
  if (auto st = db.conn.query(sql.c_str(), r); !st.ok) return report_dlq_failure(st);
  if (PQntuples(r.get()) == 0) {
    std::fprintf(stderr, "evpipe dlq: no dead letter with id %lld\n", static_cast<long long>(o.id));
    return 3;
  }
  std::printf("%s\n", PQgetvalue(r.get(), 0, 0));
  return 0;
}

int run_dlq_purge(const config::settings& s, const dlq_options& o) {
  dlq_session db;
  std::string where;
  if (int rc = prepare_dlq(s, o, db, where)) return rc;
  // The rows counted are the rows deleted: dead letters that arrive while the
  // question waits (ids above the newest counted) are left alone.
  io::pg_result r;
  std::string count_sql = "SELECT count(*), COALESCE(max(id), 0) FROM " + db.table + " WHERE " + where;
  if (auto st = db.conn.query(count_sql.c_str(), r); !st.ok) return report_dlq_failure(st);
  long long n = std::atoll(PQgetvalue(r.get(), 0, 0));
  std::string max_id = PQgetvalue(r.get(), 0, 1);
  if (o.dry_run) {
    std::printf("would delete %lld dead letters\n", n);
    return 0;
  }
  if (n == 0) {
    std::printf("deleted 0 dead letters\n");
    return 0;
  }
  if (!o.yes) {
    if (!::isatty(STDIN_FILENO)) {
      std::fprintf(stderr, "evpipe dlq: purge would delete %lld dead letters: confirm with --yes\n", n);
      return 2;
    }
    std::fprintf(stderr, "delete %lld dead letters? [y/N] ", n);
    std::string answer;
    std::getline(std::cin, answer);
    if (answer != "y" && answer != "Y" && answer != "yes") {
      std::fprintf(stderr, "not deleted\n");
      return 2;
    }
  }
  std::string del = "DELETE FROM " + db.table + " WHERE " + where + " AND id <= " + max_id;
  // A partitioned dlq_events keeps its keys in evpipe_dlq_keys
  // (docs/partitions.md): they go with their dead letters, so that a purged
  // event sent again is dead-lettered again, as with a plain table.
  const std::string keys = db.table.substr(0, db.table.size() - std::string_view("dlq_events").size()) + "evpipe_dlq_keys";
  if (io::is_partitioned(db.conn, db.table)) {
    const std::string with_keys = "WITH d AS (" + del + " RETURNING original_topic, event_digest), k AS (DELETE FROM " +
                                  keys + " k USING d WHERE k.original_topic = d.original_topic AND k.event_digest = "
                                  "d.event_digest) SELECT count(*) FROM d";
    io::pg_result d;
    if (auto st = db.conn.query(with_keys.c_str(), d); !st.ok) {
      return report_dlq_failure(st);
    }
    std::printf("deleted %s dead letters\n", PQgetvalue(d.get(), 0, 0));
    return 0;
  }
  io::pg_result d;
  if (auto st = db.conn.query(del.c_str(), d); !st.ok) return report_dlq_failure(st);
  std::printf("deleted %s dead letters\n", PQcmdTuples(d.get()));
  return 0;
}

}  // namespace evpipe::read
