#include "read/dlq/dlq_commands.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "io/postgres/pg_connection.h"
#include "read/table_reader.h"
#include "stages/topic_filter.h"

namespace evpipe::read {

namespace {

// One dead letter as a JSON object, built by PostgreSQL so that every value
// is quoted correctly; raw bytes (events that were not JSON) in bytea's
// escape form, which is ASCII.
constexpr const char* row_json =
    "json_build_object('id', id, 'created_at', created_at, 'reason', reason_code, 'topic', original_topic, "
    "'message', failure_reason, 'payload', payload, 'raw', encode(raw, 'escape'))";

struct session {
  io::pg_connection conn;
  std::string table;
};

// Connects; "" or the error.
std::string open(const config::settings& s, session& out) {
  if (auto st = out.conn.connect(s.postgres.dsn, "evpipe-dlq"); !st.ok) {
    return "cannot connect to PostgreSQL: " + st.message;
  }
  if (auto st = out.conn.exec("SET standard_conforming_strings = on"); !st.ok) return st.message;
  out.table = s.postgres.schema.empty() ? "dlq_events" : s.postgres.schema + ".dlq_events";
  return "";
}

// The WHERE clause of the filters; "" in `problem` or what is wrong.
std::string where_clause(const dlq_options& o, std::string& problem) {
  std::string w = "true";
  if (!o.reasons.empty()) {
    w += " AND reason_code IN (";
    for (size_t i = 0; i < o.reasons.size(); ++i) w += (i ? ", " : "") + sql_literal(o.reasons[i]);
    w += ")";
  }
  if (!o.topics.empty()) {
    w += " AND (";
    for (size_t i = 0; i < o.topics.size(); ++i) {
      if (auto p = stages::topic_filter_problem(o.topics[i]); !p.empty()) {
        problem = "--topic " + o.topics[i] + ": " + p;
        return "";
      }
      if (i) w += " OR ";
      w += "original_topic ~ " + sql_literal(stages::topic_filter_regex(o.topics[i]));
    }
    w += ")";
  }
  if (!o.since.empty()) w += " AND created_at >= " + sql_literal(o.since) + "::timestamptz";
  if (!o.until.empty()) w += " AND created_at < " + sql_literal(o.until) + "::timestamptz";
  return w;
}

// A failed query: a bad time is the caller's (2), anything else the database's (1).
int report(const io::pg_status& st) {
  std::fprintf(stderr, "evpipe dlq: %s\n", st.message.c_str());
  return st.sqlstate.rfind("22", 0) == 0 ? 2 : 1;
}

int prepare(const config::settings& s, const dlq_options& o, session& db, std::string& where) {
  std::string problem;
  where = where_clause(o, problem);
  if (!problem.empty()) {
    std::fprintf(stderr, "evpipe dlq: %s\n", problem.c_str());
    return 2;
  }
  if (auto e = open(s, db); !e.empty()) {
    std::fprintf(stderr, "evpipe dlq: %s\n", e.c_str());
    return 1;
  }
  return 0;
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
  session db;
  std::string where;
  if (int rc = prepare(s, o, db, where)) return rc;
  std::string sql = "SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                    "COALESCE(reason_code, ''), original_topic, failure_reason, " + std::string(row_json) +
                    "::text FROM " + db.table + " WHERE " + where + " ORDER BY id DESC" +
                    (o.limit ? " LIMIT " + std::to_string(o.limit) : "");
  io::pg_result r;
  if (auto st = db.conn.query(sql.c_str(), r); !st.ok) return report(st);
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
  session db;
  std::string where;
  if (int rc = prepare(s, o, db, where)) return rc;
  std::string sql = std::string("SELECT ") + (o.json ? "" : "jsonb_pretty(") + row_json + (o.json ? "::text" : "::jsonb)") +
                    " FROM " + db.table + " WHERE id = " + std::to_string(o.id);
  io::pg_result r;
  if (auto st = db.conn.query(sql.c_str(), r); !st.ok) return report(st);
  if (PQntuples(r.get()) == 0) {
    std::fprintf(stderr, "evpipe dlq: no dead letter with id %lld\n", static_cast<long long>(o.id));
    return 3;
  }
  std::printf("%s\n", PQgetvalue(r.get(), 0, 0));
  return 0;
}

int run_dlq_purge(const config::settings& s, const dlq_options& o) {
  session db;
  std::string where;
  if (int rc = prepare(s, o, db, where)) return rc;
  // The rows counted are the rows deleted: dead letters that arrive while the
  // question waits (ids above the newest counted) are left alone.
  io::pg_result r;
  std::string count_sql = "SELECT count(*), COALESCE(max(id), 0) FROM " + db.table + " WHERE " + where;
  if (auto st = db.conn.query(count_sql.c_str(), r); !st.ok) return report(st);
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
  io::pg_result d;
  if (auto st = db.conn.query(del.c_str(), d); !st.ok) return report(st);
  std::printf("deleted %s dead letters\n", PQcmdTuples(d.get()));
  return 0;
}

}  // namespace evpipe::read
