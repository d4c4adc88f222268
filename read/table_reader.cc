#include "read/table_reader.h"

#include <algorithm>
#include <cstring>

#include "stages/topic_filter.h"

namespace evpipe::read {

bool row_clause::matches(std::string_view topic, std::string_view kind) const {
  if (!kinds.empty() && std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) return false;
  if (topic_filters.empty()) return true;
  for (const auto& f : topic_filters) {
    if (stages::topic_matches(f, topic)) return true;
  }
  return false;
}

namespace {

// PostgreSQL's binary COPY header: signature, flags, header extension length.
constexpr char copy_signature[] = "PGCOPY\n\377\r\n";
constexpr size_t copy_signature_size = 11;
// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
constexpr int64_t pg_epoch_us = 946'684'800'000'000;

uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// A cursor over one CopyData message of the SELECT's eight columns.
struct tuple_cursor {
  const char* p;
  const char* end;
  bool field(std::string_view& out) {
    if (end - p < 4) return false;
    auto len = static_cast<int32_t>(get_u32(p));
    p += 4;
    if (len < 0) {  // NULL
      out = {};
      return true;
    }
    if (end - p < len) return false;
    out = std::string_view(p, static_cast<size_t>(len));
    p += len;
    return true;
  }
};

io::pg_status protocol_error(const std::string& what) {
  return io::pg_status{false, "", "unexpected COPY data from the server: " + what, false};
}

}  // namespace

table_reader::table_reader(io::pg_connection& conn, std::string schema)
    : conn_(conn),
      table_(schema.empty() ? "events_mirror" : schema + ".events_mirror"),
      marks_(schema.empty() ? "evpipe_retention_marks" : schema + ".evpipe_retention_marks") {}

std::string table_reader::check() {
  // Literals are quoted for standard_conforming_strings = on (the default
  // since 9.1); made sure of here rather than trusted.
  if (auto st = conn_.exec("SET standard_conforming_strings = on"); !st.ok) return st.message;
  io::pg_result r;
  std::string sql = "SELECT tx, tenant_id FROM " + table_ + " LIMIT 0";
  auto st = conn_.query(sql.c_str(), r);
  if (st.ok) {
    std::string headers = "SELECT headers FROM " + table_ + " LIMIT 0";
    io::pg_result hr;
    auto hst = conn_.query(headers.c_str(), hr);
    if (!hst.ok && hst.sqlstate != "42703") return "cannot read table " + table_ + ": " + hst.message;
    has_headers_ = hst.ok;
    const char* params[1] = {marks_.c_str()};
    io::pg_result mr;
    if (auto mst = conn_.query_params("SELECT to_regclass($1) IS NOT NULL", 1, params, mr); !mst.ok) {
      return "cannot look for " + marks_ + ": " + mst.message;
    }
    has_marks_ = std::string_view(PQgetvalue(mr.get(), 0, 0)) == "t";
    return "";
  }
  if (st.sqlstate == "42703") {
    return "table " + table_ + " lacks the tx column (the position of each row) or tenant_id: run `evpipe migrate --config FILE`";
  }
  if (st.sqlstate == "42P01" || st.sqlstate == "3F000") {
    return "table " + table_ + " does not exist: run `evpipe migrate --config FILE` first";
  }
  return "cannot read table " + table_ + ": " + st.message;
}

std::string table_reader::select_sql(const read_window& w, bool range_hint) const {
  std::string sql =
      "SELECT tx, id, topic, payload ? 'topic', payload, created_at, payload->>'kind', " +
      std::string(has_headers_ ? "headers" : "NULL::jsonb") + ", tenant_id FROM " + table_ +
      // The horizon: every transaction below it has ended, so the rows read
      // here are all the rows there will ever be up to the last one read.
      " WHERE tx < pg_snapshot_xmin(pg_current_snapshot())"
      " AND (tx, id) > ('" + std::to_string(w.after.tx) + "'::xid8, " + std::to_string(w.after.id) + ")";
  // Implied by the row comparison, and there for the planner: without
  // statistics (a fresh table, a new partition) it guesses a third of the
  // table for a row comparison (and for tx >= P alone), and for a large
  // enough table reads and sorts all of it for every read. This bound and the
  // horizon's `tx <` above make a two-sided range on tx, which it guesses at
  // 0.5 %, and it reads from the position index (a bitmap scan of it from P,
  // then a sort of those rows). With statistics the bound is past the
  // histogram, estimated from the index's real end. A read from the start has
  // no bound to give (its plan is a whole-table read anyway).
  if (range_hint && w.after.tx != 0) sql += " AND tx >= '" + std::to_string(w.after.tx) + "'::xid8";
  if (w.until) {
    sql += " AND (tx, id) <= ('" + std::to_string(w.until->tx) + "'::xid8, " + std::to_string(w.until->id) + ")";
  }
  if (!w.since_time.empty()) sql += " AND created_at >= " + sql_literal(w.since_time) + "::timestamptz";
  if (!w.until_time.empty()) sql += " AND created_at < " + sql_literal(w.until_time) + "::timestamptz";
  // Any of the clauses: each is its topics (any) and its kinds (any); a
  // clause without either takes every row, and then so does the window.
  std::string any;
  bool every = w.any_of.empty();
  for (const auto& c : w.any_of) {
    if (c.everything()) every = true;
    std::string one;
    if (!c.topic_filters.empty()) {
      one += "(";
      for (size_t i = 0; i < c.topic_filters.size(); ++i) {
        if (i) one += " OR ";
        const auto& f = c.topic_filters[i];
        // A filter without wildcards is an equality the topic index can use.
        if (f.find_first_of("+#") == std::string::npos) {
          one += "topic = " + sql_literal(f);
        } else {
          one += "topic ~ " + sql_literal(stages::topic_filter_regex(f));
        }
      }
      one += ")";
    }
    if (!c.kinds.empty()) {
      one += one.empty() ? "" : " AND ";
      one += "payload->>'kind' IN (";
      for (size_t i = 0; i < c.kinds.size(); ++i) one += (i ? ", " : "") + sql_literal(c.kinds[i]);
      one += ")";
    }
    any += (any.empty() ? "" : " OR ") + ("(" + one + ")");
  }
  if (!every) sql += " AND (" + any + ")";
  if (w.tenant) sql += " AND tenant_id = " + sql_literal(*w.tenant);
  sql += " ORDER BY tx, id";
  if (w.limit) sql += " LIMIT " + std::to_string(w.limit);
  return sql;
}

namespace {
// A page of every row between two positions (read()'s comment in the header).
bool unfiltered_page(const read_window& w) {
  return w.limit > 0 && w.until && w.since_time.empty() && w.until_time.empty() &&
         (w.any_of.empty() ||
          std::any_of(w.any_of.begin(), w.any_of.end(), [](const row_clause& c) { return c.everything(); }));
}
}  // namespace

// For an unfiltered page: bitmap scans off for this read's transaction
// only (SET LOCAL: nothing stays on the session, which a pooler in
// transaction mode may hand to another client). `own` says the transaction
// is this read's, to end with end_page().
io::pg_status table_reader::begin_page(const read_window& w, bool& own) {
  own = false;
  if (!unfiltered_page(w)) return {};
  own = !guarded_;
  return conn_.exec(own ? "BEGIN; SET LOCAL enable_bitmapscan = off" : "SET LOCAL enable_bitmapscan = off");
}

void table_reader::end_page(bool own) {
  // Read only: ROLLBACK also ends a transaction a cancelled COPY aborted.
  if (own) (void)conn_.exec("ROLLBACK");
}

std::vector<std::string> table_reader::explain_read(const read_window& w) {
  std::vector<std::string> lines;
  bool own = false;
  if (!begin_page(w, own).ok) return lines;
  io::pg_result r;
  if (conn_.query(("EXPLAIN (ANALYZE, TIMING OFF) " + select_sql(w)).c_str(), r).ok) {
    for (int i = 0; i < PQntuples(r.get()); ++i) lines.emplace_back(PQgetvalue(r.get(), i, 0));
  }
  end_page(own);
  return lines;
}

io::pg_status table_reader::read(const read_window& w, const std::function<row_action(const event_row&)>& on_row) {
  bool own = false;
  if (auto st = begin_page(w, own); !st.ok) {
    end_page(own);
    return st;
  }
  auto st = read_rows(w, on_row);
  end_page(own);
  return st;
}

io::pg_status table_reader::read_rows(const read_window& w, const std::function<row_action(const event_row&)>& on_row) {
  std::string sql = "COPY (" + select_sql(w) + ") TO STDOUT (FORMAT binary)";
  PGconn* c = conn_.raw();
  io::pg_result start(PQexec(c, sql.c_str()));
  if (PQresultStatus(start.get()) != PGRES_COPY_OUT) return conn_.error_of(start.get());

  io::pg_status status;
  bool header_seen = false, stopped = false;
  for (;;) {
    char* buf = nullptr;
    int n = PQgetCopyData(c, &buf, 0);
    if (n == -1) break;  // done (or cancelled): the result follows
    if (n < 0) return conn_.error_of(nullptr);
    std::unique_ptr<char, decltype(&PQfreemem)> hold(buf, &PQfreemem);
    if (stopped || !status.ok) continue;  // draining after a cancel
    const char* p = buf;
    const char* end = buf + n;
    if (!header_seen) {
      if (n < 19 || std::memcmp(p, copy_signature, copy_signature_size) != 0) {
        status = protocol_error("no binary header");
        continue;
      }
      uint32_t ext = get_u32(p + 15);
      p += 19 + ext;
      header_seen = true;
      if (p >= end) continue;  // the header came alone
    }
    if (end - p < 2) {
      status = protocol_error("short tuple");
      continue;
    }
    auto fields = static_cast<int16_t>((static_cast<unsigned char>(p[0]) << 8) | static_cast<unsigned char>(p[1]));
    if (fields == -1) continue;  // the trailer
    if (fields != 9) {
      status = protocol_error("tuple of " + std::to_string(fields) + " fields");
      continue;
    }
    tuple_cursor cur{p + 2, end};
    std::string_view tx, id, topic, has_topic, payload, created, kind, headers, tenant;
    if (!cur.field(tx) || !cur.field(id) || !cur.field(topic) || !cur.field(has_topic) || !cur.field(payload) ||
        !cur.field(created) || !cur.field(kind) || !cur.field(headers) || !cur.field(tenant) || tx.size() != 8 || id.size() != 8 || has_topic.size() != 1 || payload.empty() ||
        payload[0] != 1 || created.size() != 8) {
      status = protocol_error("malformed tuple");
      continue;
    }
    event_row row;
    row.pos = position{get_u64(tx.data()), static_cast<int64_t>(get_u64(id.data()))};
    row.topic = topic;
    row.payload = payload.substr(1);  // jsonb's binary form: version 1, then the text
    row.payload_has_topic = has_topic[0] != 0;
    row.created_at_us = static_cast<int64_t>(get_u64(created.data())) + pg_epoch_us;
    row.kind = kind;
    // jsonb's binary form again (a NULL reads as empty).
    row.headers = headers.empty() ? headers : headers.substr(1);
    row.tenant = tenant;
    if (on_row(row) == row_action::stop) {
      stopped = true;
      // Ends the COPY on the server; what it already sent is drained above.
      if (PGcancel* cancel = PQgetCancel(c)) {
        char err[256];
        (void)PQcancel(cancel, err, sizeof err);
        PQfreeCancel(cancel);
      }
    }
  }
  for (io::pg_result r(PQgetResult(c)); r; r.reset(PQgetResult(c))) {
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK && status.ok && !stopped) status = conn_.error_of(r.get());
  }
  return status;
}

io::pg_status table_reader::live_edge(position& out) {
  io::pg_result r;
  // xid8's text is its decimal number. (Selected as `tx::text`, ORDER BY tx
  // would sort that text: "999" after "1000", and a whole-table sort.)
  std::string sql = "SELECT tx, id FROM " + table_ +
                    " WHERE tx < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx DESC, id DESC LIMIT 1";
  auto st = conn_.query(sql.c_str(), r);
  if (!st.ok) return st;
  out = PQntuples(r.get()) == 0 ? position::start()
                                : position{std::strtoull(PQgetvalue(r.get(), 0, 0), nullptr, 10),
                                           std::strtoll(PQgetvalue(r.get(), 0, 1), nullptr, 10)};
  return {};
}

namespace {
// Each drop record of `rows` (the SELECT of drops_sql) into `out`.
void read_drops(const PGresult* rows, std::vector<table_reader::drop_record>& out) {
  for (int i = 0, n = PQntuples(rows); i < n; ++i) {
    table_reader::drop_record d;
    d.seq = std::strtoll(PQgetvalue(rows, i, 0), nullptr, 10);
    d.last = {std::strtoull(PQgetvalue(rows, i, 1), nullptr, 10), std::strtoll(PQgetvalue(rows, i, 2), nullptr, 10)};
    d.rows = std::strtoll(PQgetvalue(rows, i, 3), nullptr, 10);
    d.what = PQgetvalue(rows, i, 4);
    d.dropped_at = PQgetvalue(rows, i, 5);
    out.push_back(std::move(d));
  }
}
}  // namespace

std::string table_reader::drops_sql(position since, int64_t after_seq) const {
  // Numbers only: written into the statement, so that it can follow BEGIN in one round trip.
  return "SELECT seq, last_tx::text, last_id, rows, dropped, to_char(dropped_at AT TIME ZONE 'UTC', "
         "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM " + marks_ +
         " WHERE table_name = 'events_mirror' AND (last_tx, last_id) > ('" + std::to_string(since.tx) + "'::xid8, " +
         std::to_string(since.id) + ") AND seq > " + std::to_string(after_seq) + " ORDER BY seq";
}

io::pg_status table_reader::drops_after(position since, int64_t after_seq, std::vector<drop_record>& out) {
  out.clear();
  if (!has_marks_) return {};
  io::pg_result r;
  if (auto st = conn_.query(drops_sql(since, after_seq).c_str(), r); !st.ok) return st;
  read_drops(r.get(), out);
  return {};
}

io::pg_status table_reader::newest_drop(int64_t& seq) {
  seq = 0;
  if (!has_marks_) return {};
  // Under the lock every drop holds while it is made: no seq is then taken
  // and not yet committed, so none below the newest can appear later.
  io::pg_result r;
  auto st = conn_.query(("BEGIN; LOCK TABLE ONLY " + table_ + " IN ACCESS SHARE MODE; SELECT COALESCE(max(seq), 0) FROM " +
                         marks_)
                            .c_str(),
                        r);
  if (st.ok) seq = std::strtoll(PQgetvalue(r.get(), 0, 0), nullptr, 10);
  (void)conn_.exec("ROLLBACK");
  return st;
}

io::pg_status table_reader::begin_drop_guard(position since, int64_t after_seq, std::vector<drop_record>& out) {
  out.clear();
  if (!has_marks_) return {};
  // One round trip: the transaction, its lock, and the drops (the last result).
  io::pg_result r;
  auto st = conn_.query(("BEGIN; LOCK TABLE ONLY " + table_ + " IN ACCESS SHARE MODE; " + drops_sql(since, after_seq))
                            .c_str(),
                        r);
  if (!st.ok) {
    (void)conn_.exec("ROLLBACK");
    return st;
  }
  guarded_ = true;
  read_drops(r.get(), out);
  return {};
}

void table_reader::end_drop_guard() {
  if (!guarded_) return;
  guarded_ = false;
  // A read that failed left the transaction aborted: ROLLBACK ends it as well.
  (void)conn_.exec("ROLLBACK");
}

std::string describe_dropped(position since, std::span<const table_reader::drop_record> drops) {
  int64_t rows = 0;
  const table_reader::drop_record* last = nullptr;
  for (const auto& d : drops) {
    rows += d.rows;
    if (!last || d.last > last->last) last = &d;
  }
  if (!last) return {};
  const std::string resume = encode(last->last);
  return "events after position " + encode(since) + " are gone: [storage] retention dropped them (" +
         (drops.size() > 1 ? std::to_string(drops.size()) + " drops of " + std::to_string(rows) + " rows in all; the last "
                           : std::to_string(rows) + " rows, ") +
         last->what + ", at " + last->dropped_at + "), up to position " + resume + ". Resume from \"" + resume +
         "\" for the events after them, or give a time as since for every event kept from that time";
}

uint64_t table_reader::estimate_rows(const read_window& w) {
  io::pg_result r;
  std::string sql = "EXPLAIN (FORMAT JSON) " + select_sql(w, false);
  if (!conn_.query(sql.c_str(), r).ok) return 0;
  std::string_view plan = PQgetvalue(r.get(), 0, 0);
  auto at = plan.find("\"Plan Rows\": ");
  if (at == std::string_view::npos) return 0;
  return std::strtoull(plan.data() + at + 13, nullptr, 10);
}

io::pg_status read_horizon(io::pg_connection& conn, horizon_state& out) {
  io::pg_result r;
  auto st = conn.query(
      "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text, "
      "       COALESCE(EXTRACT(epoch FROM clock_timestamp() - a.xact_start), 0), COALESCE(a.pid, 0), "
      "       COALESCE(a.application_name, '') "
      "FROM pg_current_snapshot() s LEFT JOIN LATERAL ("
      "  SELECT pid, xact_start, application_name FROM pg_stat_activity "
      "  WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
      "  ORDER BY age(backend_xid) DESC LIMIT 1) a ON true",
      r);
  if (!st.ok) return st;
  out.horizon = std::strtoull(PQgetvalue(r.get(), 0, 0), nullptr, 10);
  out.next_tx = std::strtoull(PQgetvalue(r.get(), 0, 1), nullptr, 10);
  out.oldest_age_s = std::strtod(PQgetvalue(r.get(), 0, 2), nullptr);
  out.oldest_pid = std::atoi(PQgetvalue(r.get(), 0, 3));
  out.oldest_application = PQgetvalue(r.get(), 0, 4);
  return {};
}

}  // namespace evpipe::read
