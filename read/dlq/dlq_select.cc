#include "read/dlq/dlq_select.h"

#include <cstdio>

#include "read/table_reader.h"
#include "stages/event.h"
#include "stages/topic_filter.h"

namespace evpipe::read {

namespace {

// Connects; "" or the error.
std::string open(const config::settings& s, dlq_session& out) {
  if (auto st = out.conn.connect(s.postgres.dsn, "evpipe-dlq"); !st.ok) {
    return "cannot connect to PostgreSQL: " + st.message;
  }
  if (auto st = out.conn.exec("SET standard_conforming_strings = on"); !st.ok) return st.message;
  out.table = s.postgres.schema.empty() ? "dlq_events" : s.postgres.schema + ".dlq_events";
  // The nullable headers column (schemas/events.sql), when `evpipe migrate`
  // has added it; commands read NULL for it otherwise.
  io::pg_result r;
  std::string probe = "SELECT headers FROM " + out.table + " LIMIT 0";
  out.has_headers = out.conn.query(probe.c_str(), r).ok;
  probe = "SELECT tenant_id FROM " + out.table + " LIMIT 0";
  out.has_tenant = out.conn.query(probe.c_str(), r).ok;
  return "";
}

// A reason code evpipe writes; "" or what is wrong. A misspelt reason would
// otherwise select nothing, silently (or, for purge, delete nothing).
std::string reason_problem(const std::string& r) {
  std::string known;
  for (int i = 1; i < stages::reason_count; ++i) {
    auto code = stages::reason_code(static_cast<stages::reason>(i));
    if (r == code) return "";
    known += (known.empty() ? "" : ", ") + std::string(code);
  }
  return "--reason " + r + ": not a reason code; evpipe writes " + known;
}

// The WHERE clause of the filters; "" in `problem` or what is wrong.
std::string where_clause(const dlq_options& o, std::string& problem) {
  std::string w = "true";
  if (!o.reasons.empty()) {
    w += " AND reason_code IN (";
    for (size_t i = 0; i < o.reasons.size(); ++i) {
      if (problem = reason_problem(o.reasons[i]); !problem.empty()) return "";
      w += (i ? ", " : "") + sql_literal(o.reasons[i]);
    }
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
  if (o.tenant) w += " AND tenant_id = " + sql_literal(*o.tenant);
  return w;
}

}  // namespace

int report_dlq_failure(const io::pg_status& st) {
  std::fprintf(stderr, "evpipe dlq: %s\n", st.message.c_str());
  return st.sqlstate.rfind("22", 0) == 0 ? 2 : 1;
}

int prepare_dlq(const config::settings& s, const dlq_options& o, dlq_session& db, std::string& where) {
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

}  // namespace evpipe::read
