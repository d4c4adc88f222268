#include "io/postgres/partitions.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "io/postgres/partition_probe.h"

namespace evpipe::io {

namespace {

// The parents evpipe partitions, each with its key table and key columns.
struct partitioned_table {
  const char* name;
  const char* keys;  // the key table
};
constexpr partitioned_table tables[] = {{"events_mirror", "evpipe_mirror_keys"}, {"dlq_events", "evpipe_dlq_keys"}};

// A table one round maintains, as written in statements (schema-qualified
// when [postgres] schema is set).
struct maintained_table {
  std::string parent;
  std::string column;  // the range partition key
  std::string keys;    // the key table pruned after its rows ("" = none)
  // Where what retention drops is recorded ("" = nowhere): events_mirror's,
  // which readers resume on by position.
  std::string marks;
};

// The base columns of each table, as schemas/events.sql creates them, but
// with created_at NOT NULL (the partition key) and a primary key that
// includes it (PostgreSQL requires the partition key in every unique index).
// events.sql then adds the other columns, as it does to a plain table.
constexpr const char* mirror_ddl =
    "CREATE TABLE {t} (id BIGSERIAL, topic VARCHAR(255) NOT NULL, payload JSONB NOT NULL, "
    "created_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
    "trace_id UUID GENERATED ALWAYS AS ((payload->>'trace_id')::uuid) STORED, PRIMARY KEY (id, created_at)) "
    "PARTITION BY RANGE (created_at)";
constexpr const char* dlq_ddl =
    "CREATE TABLE {t} (id BIGSERIAL, original_topic VARCHAR(255) NOT NULL, failure_reason TEXT NOT NULL, "
    "payload JSONB, created_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at)) "
    "PARTITION BY RANGE (created_at)";
// One row per stored key. created_at is the writing transaction's now(),
// equal to the created_at of the row it stands for (same transaction). No
// index on it: pruning sweeps the table now and then instead
// (sweep_keys), where an index would cost every write one more entry.
constexpr const char* mirror_keys_ddl =
    "CREATE TABLE IF NOT EXISTS {t} (tenant_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, "
    "created_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (idempotency_key, tenant_id))";
constexpr const char* dlq_keys_ddl =
    "CREATE TABLE IF NOT EXISTS {t} (original_topic VARCHAR(255) NOT NULL, event_digest BYTEA NOT NULL, "
    "created_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (original_topic, event_digest))";
// The index on created_at that evpipe gave the key tables before
// 2026-12-02; migrate drops it (CONCURRENTLY: writers go on).
constexpr const char* old_keys_index_suffix = "_created_at";

std::string fill(std::string sql, const std::string& t) {
  for (size_t at; (at = sql.find("{t}")) != std::string::npos;) sql.replace(at, 3, t);
  return sql;
}

std::string describe(const pg_status& st) { return st.sqlstate.empty() ? st.message : st.sqlstate + " " + st.message; }

// "" when there is no such table; else its relkind ("r" plain, "p" partitioned).
std::string relkind(pg_connection& conn, const std::string& table, pg_status& st) {
  const char* params[1] = {table.c_str()};
  pg_result r;
  st = conn.query_params("SELECT relkind FROM pg_class WHERE oid = to_regclass($1)", 1, params, r);
  if (!st.ok || PQntuples(r.get()) == 0) return "";
  return PQgetvalue(r.get(), 0, 0);
}

using namespace std::chrono;

std::string timestamp_literal(int64_t t) {
  const year_month_day d{floor<days>(sys_seconds{seconds{t}})};
  char buf[48];
  std::snprintf(buf, sizeof buf, "'%04d-%02u-%02u 00:00:00+00'", int(d.year()), unsigned(d.month()),
                unsigned(d.day()));
  return buf;
}

// "events_mirror" of "schema.events_mirror".
std::string unqualified(const std::string& table) {
  const size_t dot = table.rfind('.');
  return dot == std::string::npos ? table : table.substr(dot + 1);
}

// The day of `t` as text: "2026-12-04".
std::string day_text(int64_t t) { return timestamp_literal(t).substr(1, 10); }

std::string name_suffix(int64_t t) {
  const year_month_day d{floor<days>(sys_seconds{seconds{t}})};
  char buf[24];
  std::snprintf(buf, sizeof buf, "_p%04d%02u%02u", int(d.year()), unsigned(d.month()), unsigned(d.day()));
  return buf;
}

int64_t first_int(const pg_result& r, int col = 0) {
  return PQgetisnull(r.get(), 0, col) ? INT64_MIN : std::strtoll(PQgetvalue(r.get(), 0, col), nullptr, 10);
}

// The partition of `p` for `parent`, unless it exists. Made as a plain table
// with the parent's columns and a CHECK of the range (so ATTACH need not scan
// it), filled with the rows the default partition holds in the range (which
// leave it), then attached: all in one transaction.
pg_status ensure_partition(pg_connection& conn, const std::string& parent, const std::string& column,
                           const std::string& default_part, const period& p, partition_round& done) {
  const std::string name = parent + name_suffix(p.begin);
  pg_status st;
  if (!relkind(conn, name, st).empty() || !st.ok) return st;
  const std::string lo = timestamp_literal(p.begin), hi = timestamp_literal(p.end);
  const std::string range = column + " >= " + lo + " AND " + column + " < " + hi;
  const std::string bare = name.substr(name.find('.') + 1);
  std::string sql = "BEGIN; CREATE TABLE " + name + " (LIKE " + parent +
                    " INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION); "
                    "ALTER TABLE " + name + " ADD CONSTRAINT " + bare + "_range CHECK (" + range + ")";
  st = conn.exec(sql.c_str());
  uint64_t moved = 0;
  if (st.ok && !default_part.empty()) {
    // Every column but the generated ones, which the new table computes.
    const char* params[1] = {parent.c_str()};
    pg_result cols;
    st = conn.query_params(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''",
        1, params, cols);
    if (st.ok) {
      const std::string c = PQgetvalue(cols.get(), 0, 0);
      st = conn.exec_counted(("INSERT INTO " + name + " (" + c + ") SELECT " + c + " FROM " + default_part +
                              " WHERE " + range + "; DELETE FROM " + default_part + " WHERE " + range)
                                 .c_str(),
                             moved);
    }
  }
  if (st.ok) {
    st = conn.exec(("ALTER TABLE " + parent + " ATTACH PARTITION " + name + " FOR VALUES FROM (" + lo + ") TO (" +
                    hi + "); COMMIT")
                       .c_str());
  }
  if (!st.ok) {
    if (!st.connection_lost) (void)conn.exec("ROLLBACK");
    // 42P17: another partition covers (part of) the range, e.g. a converted
    // plain table (docs/partitions.md): nothing to make there.
    if (st.sqlstate == "42P17") return {};
    return st;
  }
  auto& probe = partition_probe::instance().of(parent);
  probe.created.fetch_add(1, std::memory_order_relaxed);
  probe.rows_moved.fetch_add(moved, std::memory_order_relaxed);
  done.rows_moved += moved;
  done.created.push_back(name);
  if (moved > 0) {
    spdlog::info("partition {} created for [{}, {}); {} rows moved into it from {}", name, lo, hi, moved,
                 default_part);
  } else {
    spdlog::info("partition {} created for [{}, {})", name, lo, hi);
  }
  return {};
}

}  // namespace

period period_of(const std::string& unit, int64_t t) {
  const sys_days d = floor<days>(sys_seconds{seconds{t}});
  sys_days begin = d, end = d + days{1};
  if (unit == "week") {
    begin = d - (weekday{d} - Monday);
    end = begin + days{7};
  } else if (unit == "month") {
    const year_month_day ymd{d};
    const year_month first = ymd.year() / ymd.month();
    begin = sys_days{first / 1};
    end = sys_days{(first + months{1}) / 1};
  }
  return {sys_seconds{begin}.time_since_epoch().count(), sys_seconds{end}.time_since_epoch().count()};
}

bool is_partitioned(pg_connection& conn, const std::string& table) {
  pg_status st;
  return relkind(conn, table, st) == "p";
}

std::string prepare_partitioned_tables(pg_connection& conn, const std::string& schema, const std::string& unit) {
  const std::string prefix = schema.empty() ? "" : schema + ".";
  pg_status st;
  if (!schema.empty()) {
    st = conn.exec(("CREATE SCHEMA IF NOT EXISTS " + schema).c_str());
    if (!st.ok) return "cannot create schema " + schema + ": " + describe(st);
  }
  for (const auto& t : tables) {
    const std::string qualified = prefix + t.name;
    const std::string kind = relkind(conn, qualified, st);
    if (!st.ok) return "cannot inspect " + qualified + ": " + describe(st);
    if (kind == "r" && unit != "none") {
      return "table " + qualified + " is a plain table and [storage] partition = \"" + unit +
             "\": convert it first, step by step as docs/partitions.md says (\"From a plain table\")";
    }
    if (kind.empty() && unit != "none") {
      const std::string sql = "BEGIN; " + fill(t.keys == tables[0].keys ? mirror_ddl : dlq_ddl, qualified) +
                              "; CREATE TABLE " + qualified + "_default PARTITION OF " + qualified +
                              " DEFAULT; COMMIT";
      st = conn.exec(sql.c_str());
      if (!st.ok) {
        (void)conn.exec("ROLLBACK");
        return "cannot create partitioned table " + qualified + ": " + describe(st);
      }
      spdlog::info("created {} partitioned by {} on created_at", qualified, unit);
    }
    if (kind == "p" || (kind.empty() && unit != "none")) {
      const std::string keys = prefix + t.keys;
      st = conn.exec(fill(t.keys == tables[0].keys ? mirror_keys_ddl : dlq_keys_ddl, keys).c_str());
      if (!st.ok) return "cannot create " + keys + ": " + describe(st);
      const std::string old_index = keys + old_keys_index_suffix;
      const std::string old_kind = relkind(conn, old_index, st);
      if (!st.ok) return "cannot inspect " + old_index + ": " + describe(st);
      if (old_kind == "i") {
        spdlog::info("dropping index {}: the key table is pruned by sweeps now, without it (docs/partitions.md)",
                     old_index);
        st = conn.exec(("DROP INDEX CONCURRENTLY IF EXISTS " + old_index).c_str());
        if (!st.ok) return "cannot drop index " + old_index + ": " + describe(st);
      }
    }
  }
  return "";
}

std::vector<partitioned_route_table> partitioned_route_tables(const std::vector<config::route>& routes) {
  std::vector<partitioned_route_table> out;
  for (const auto& r : routes) {
    if (r.partition_by.empty() || r.table.empty()) continue;
    partitioned_route_table t{r.table, r.partition_by};
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(std::move(t));
  }
  return out;
}

namespace {

// The list a reload published (publish_partitioned_route_tables), if any.
std::mutex published_mu;
bool published = false;
std::vector<partitioned_route_table> published_tables;

// Prunes `keys` of the keys older than every row of `parent` and than the
// retention, reading it through a number of pages at a time (it has no
// index on created_at). With a memo, only when that cutoff has passed the
// oldest key the last sweep left; the memo then holds the oldest key this
// one left. Each statement computes the cutoff in its own snapshot, as a
// single DELETE would.
pg_status sweep_keys(pg_connection& conn, const partition_options& o, const std::string& parent, const std::string& keys,
                     partition_counters& probe, partition_round& done, key_sweep_memo* memo) {
  const std::string cutoff = "LEAST(now() - make_interval(secs => $1::float8), coalesce((SELECT min(created_at) FROM " +
                             parent + "), 'infinity'))";
  const std::string retention = std::to_string(o.retention_s);
  const char* params[2] = {retention.c_str(), keys.c_str()};
  pg_result r;
  // The cutoff in µs (NULL when it is -infinity: rows converted without a
  // time, docs/partitions.md; then no key is older), the least time a key
  // committed from now on can carry (the oldest open transaction's start,
  // at most now() - the margin), and the table's size in pages.
  pg_status st = conn.query_params(
      ("SELECT CASE WHEN isfinite(c) THEN (extract(epoch FROM c) * 1000000)::bigint END, "
       "(extract(epoch FROM LEAST(now() - make_interval(secs => " + std::to_string(key_sweep_margin_s) +
       "), (SELECT min(xact_start) FROM pg_stat_activity))) * 1000000)::bigint, "
       "pg_relation_size($2::regclass) / current_setting('block_size')::bigint FROM (SELECT " + cutoff + " AS c) s")
          .c_str(),
      2, params, r);
  if (!st.ok) return st;
  if (PQgetisnull(r.get(), 0, 0)) return {};
  const int64_t cutoff_us = std::strtoll(PQgetvalue(r.get(), 0, 0), nullptr, 10);
  int64_t oldest = std::strtoll(PQgetvalue(r.get(), 0, 1), nullptr, 10);
  const int64_t pages = std::strtoll(PQgetvalue(r.get(), 0, 2), nullptr, 10);
  if (memo) {
    auto it = memo->oldest_left_us.find(keys);
    if (it != memo->oldest_left_us.end() && cutoff_us <= it->second) return {};  // nothing can be older
  }
  ++done.key_sweeps;
  // One statement per range of pages (TID range scans): the deletion; the
  // keys past the cutoff it could see, so that any it skipped (locked by
  // another sweep, which may yet roll back) keep the memo from saying the
  // range is clean; and the oldest key the range keeps.
  const std::string range = " WHERE ctid >= $2::tid AND ctid < $3::tid";
  const std::string sweep = "WITH d AS (DELETE FROM " + keys + " WHERE ctid = ANY(ARRAY(SELECT ctid FROM " + keys +
                            range + " AND created_at < " + cutoff + " FOR UPDATE SKIP LOCKED)) RETURNING 1) "
                            "SELECT (SELECT count(*) FROM d), s.past, (extract(epoch FROM s.kept) * 1000000)::bigint "
                            "FROM (SELECT count(*) FILTER (WHERE created_at < " + cutoff + ") AS past, "
                            "min(created_at) FILTER (WHERE created_at >= " + cutoff + ") AS kept FROM " + keys + range +
                            ") s";
  bool skipped = false;
  const int64_t step = std::max<int64_t>(1, o.prune_pages);
  for (int64_t page = 0; page < pages; page += step) {
    if (memo && memo->stop && memo->stop->load(std::memory_order_relaxed)) return {};  // stopping: the next start sweeps
    const std::string from = "(" + std::to_string(page) + ",0)", to = "(" + std::to_string(page + step) + ",0)";
    const char* sweep_params[3] = {retention.c_str(), from.c_str(), to.c_str()};
    st = conn.query_params(sweep.c_str(), 3, sweep_params, r);
    if (!st.ok) return st;
    const auto n = static_cast<uint64_t>(std::strtoull(PQgetvalue(r.get(), 0, 0), nullptr, 10));
    probe.keys_pruned.fetch_add(n, std::memory_order_relaxed);
    done.keys_pruned += n;
    if (std::strtoull(PQgetvalue(r.get(), 0, 1), nullptr, 10) > n) skipped = true;
    if (!PQgetisnull(r.get(), 0, 2)) oldest = std::min(oldest, int64_t(std::strtoll(PQgetvalue(r.get(), 0, 2), nullptr, 10)));
  }
  if (memo) {
    if (skipped) memo->oldest_left_us.erase(keys);  // sweep again next round
    else memo->oldest_left_us[keys] = oldest;
  }
  return {};
}

// One table's part of a round (partition_maintainer::maintain_once).
pg_status maintain_table(pg_connection& conn, const partition_options& o, const maintained_table& t, int64_t now,
                         int64_t cutoff, partition_round& done, key_sweep_memo* memo) {
  const std::string& parent = t.parent;
  const std::string& col = t.column;
  auto& probe = partition_probe::instance().of(parent);
  const char* params[1] = {parent.c_str()};
  pg_result r;
  // Retention is recorded where the table for it exists (a database
  // migrated by an older evpipe has none until the next migrate).
  bool marks = false;
  if (!t.marks.empty() && o.retention_s > 0) {
    const char* mp[1] = {t.marks.c_str()};
    pg_status ms = conn.query_params("SELECT to_regclass($1) IS NOT NULL", 1, mp, r);
    if (!ms.ok) return ms;
    marks = std::string_view(PQgetvalue(r.get(), 0, 0)) == "t";
    if (!marks) {
      spdlog::warn("{} does not exist: what retention drops from {} is not recorded for readers until `evpipe "
                   "migrate` makes it", t.marks, parent);
    }
  }
  // The DEFAULT partition, whatever its name, and the span of its rows.
  std::string default_part;
  pg_status st = conn.query_params(
      "SELECT partdefid::regclass::text FROM pg_partitioned_table WHERE partrelid = $1::regclass AND partdefid <> 0",
      1, params, r);
  if (!st.ok) return st;
  if (PQntuples(r.get()) > 0) {
    default_part = PQgetvalue(r.get(), 0, 0);
  } else {
    // None (a route table as its owner made it, or one dropped): without it a
    // row of a period with no partition would be refused, failing its batch.
    const std::string name = parent + "_default";
    st = conn.exec(("CREATE TABLE " + name + " PARTITION OF " + parent + " DEFAULT").c_str());
    if (!st.ok) return st;
    spdlog::info("partition {} created: the DEFAULT partition of {}", name, parent);
    default_part = name;
  }
  // Rows there mean a period had no partition when they were written
  // (evpipe was stopped, other writers ran before migrate, or, for a route
  // table, an event's own time is old or far ahead): each period that holds
  // some gets its partition and its rows, a bounded number per round, found
  // oldest first (through an index on the column, when the table has one).
  int64_t from = INT64_MIN;
  for (int budget = 64; budget > 0; --budget) {
    // floor: ::bigint rounds, and a row in the last half second of a
    // period would round into the next one and never be moved.
    const std::string next = "SELECT floor(extract(epoch FROM min(" + col + ")))::bigint FROM " + default_part +
                             (from == INT64_MIN ? "" : " WHERE " + col + " >= " + timestamp_literal(from));
    st = conn.query(next.c_str(), r);
    if (!st.ok) return st;
    const int64_t oldest = first_int(r);
    if (oldest == INT64_MIN) break;
    const period p = period_of(o.unit, oldest);
    from = p.end;
    if (p.end <= cutoff) {
      // Past the retention already: dropped like the partition it would have had.
      uint64_t n = 0;
      const std::string range = col + " >= " + timestamp_literal(p.begin) + " AND " + col + " < " + timestamp_literal(p.end);
      if (marks) {
        // The deleted rows' count and last position, recorded in the same
        // statement, under the parent's lock as a partition's drop: a reader
        // checks for drops and reads in one transaction holding the parent,
        // so no drop lands between the two, and a reader's newest drop is
        // never one still being made (docs/read.md).
        pg_result d;
        st = conn.query(("BEGIN; LOCK TABLE ONLY " + parent + " IN ACCESS EXCLUSIVE MODE; WITH d AS (DELETE FROM " + default_part + " WHERE " + range + " RETURNING tx, id), " +
                         "l AS (SELECT tx, id FROM d ORDER BY tx DESC, id DESC LIMIT 1), " +
                         "m AS (INSERT INTO " + t.marks + " (table_name, dropped, rows, last_tx, last_id) SELECT " +
                         sql_literal(unqualified(parent)) + ", " +
                         sql_literal("rows of " + default_part + " from " + day_text(p.begin) + " to " + day_text(p.end)) +
                         ", (SELECT count(*) FROM d), tx, id FROM l) SELECT count(*) FROM d")
                            .c_str(),
                        d);
        if (st.ok) n = static_cast<uint64_t>(first_int(d));
        if (st.ok) st = conn.exec("COMMIT");
        if (!st.ok) {
          (void)conn.exec("ROLLBACK");
          return st;
        }
      } else {
        st = conn.exec_counted(("DELETE FROM " + default_part + " WHERE " + range).c_str(), n);
        if (!st.ok) return st;
      }
      if (n > 0) spdlog::info("{} rows of {} past the retention deleted from {}", n, parent, default_part);
      probe.rows_dropped.fetch_add(n, std::memory_order_relaxed);
      done.rows_dropped += n;
      continue;
    }
    st = ensure_partition(conn, parent, col, default_part, p, done);
    if (!st.ok) return st;
  }
  // Ahead of time: the current period and premake more.
  period p = period_of(o.unit, now);
  for (uint32_t k = 0; k <= o.premake; ++k, p = period_of(o.unit, p.end)) {
    st = ensure_partition(conn, parent, col, default_part, p, done);
    if (!st.ok) return st;
  }
  if (o.retention_s == 0) return {};
  // Retention: every partition whose upper bound is past the cutoff (the
  // DEFAULT one has no bound; one with MAXVALUE neither).
  st = conn.query_params(
      "SELECT c.oid::regclass::text, extract(epoch FROM substring(pg_get_expr(c.relpartbound, c.oid) "
      "FROM 'TO \\(''([^'']+)''\\)')::timestamptz)::bigint AS hi FROM pg_inherits i JOIN pg_class c "
      "ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY hi",
      1, params, r);
  if (!st.ok) return st;
  std::vector<std::string> old;
  for (int i = 0, n = PQntuples(r.get()); i < n; ++i) {
    if (PQgetisnull(r.get(), i, 1)) continue;
    if (std::strtoll(PQgetvalue(r.get(), i, 1), nullptr, 10) <= cutoff) old.emplace_back(PQgetvalue(r.get(), i, 0));
  }
  for (const auto& name : old) {
    pg_result count;
    st = conn.query(("SELECT count(*) FROM " + name).c_str(), count);
    if (!st.ok) return st;
    const auto rows = static_cast<uint64_t>(first_int(count));
    if (marks && rows > 0) {
      // Its last position (through its (tx, id) index) is recorded in the
      // transaction that drops it, under the lock the drop takes on the
      // parent, taken first as DROP takes it: no row comes in between, and
      // two maintainers (or a reader of the parent) cannot each hold a lock
      // the other waits for. The count is the one above (a whole partition's
      // count is not taken under that lock).
      st = conn.exec(("BEGIN; LOCK TABLE ONLY " + parent + " IN ACCESS EXCLUSIVE MODE; INSERT INTO " + t.marks +
                      " (table_name, dropped, rows, last_tx, last_id) SELECT " + sql_literal(unqualified(parent)) +
                      ", " + sql_literal(name) + ", " + std::to_string(rows) + ", tx, id FROM " + name +
                      " ORDER BY tx DESC, id DESC LIMIT 1; DROP TABLE " + name + "; COMMIT")
                         .c_str());
      if (!st.ok) {
        (void)conn.exec("ROLLBACK");
        return st;
      }
    } else {
      st = conn.exec(("DROP TABLE " + name).c_str());
      if (!st.ok) return st;
    }
    spdlog::info("partition {} dropped: its range ended more than {} s ago ([storage] retention); {} rows", name,
                 o.retention_s, rows);
    probe.dropped.fetch_add(1, std::memory_order_relaxed);
    probe.rows_dropped.fetch_add(rows, std::memory_order_relaxed);
    done.dropped.push_back(name);
    done.rows_dropped += rows;
  }
  // Keys older than every row of their table (and than the retention):
  // a key goes only after its row, so the table never holds a key twice.
  // (A route table's keys are in evpipe_route_keys, pruned by age.)
  if (t.keys.empty()) return {};
  return sweep_keys(conn, o, parent, t.keys, probe, done, memo);
}

}  // namespace

void publish_partitioned_route_tables(std::vector<partitioned_route_table> tables) {
  std::lock_guard lock(published_mu);
  published = true;
  published_tables = std::move(tables);
}

namespace {

// Every table a round looks at: evpipe's, with their key tables, then the
// routes' (whose keys evpipe_route_keys holds, pruned by age on its own).
std::vector<maintained_table> maintained_tables(const partition_options& o) {
  const std::string prefix = o.schema.empty() ? "" : o.schema + ".";
  std::vector<maintained_table> out;
  for (const auto& t : tables) {
    out.push_back({prefix + t.name, "created_at", prefix + t.keys,
                   std::string_view(t.name) == "events_mirror" ? prefix + "evpipe_retention_marks" : ""});
  }
  for (const auto& t : o.route_tables) {
    out.push_back({t.table.find('.') == std::string::npos ? prefix + t.table : t.table, t.column, "", ""});
  }
  return out;
}

}  // namespace

pg_status partition_maintainer::maintain_once(pg_connection& conn, const partition_options& o,
                                              partition_round& done, key_sweep_memo* memo) {
  pg_result r;
  pg_status st = conn.query("SELECT floor(extract(epoch FROM now()))::bigint", r);
  if (!st.ok) return st;
  const int64_t now = first_int(r);
  const int64_t cutoff = o.retention_s > 0 ? now - int64_t(o.retention_s) : INT64_MIN;
  pg_status first;
  for (const auto& t : maintained_tables(o)) {
    // A table that is not partitioned is not maintained: evpipe's own when
    // [storage] partition was set after they were made plain (migrate says
    // so), a route table that run's start-up check refused.
    if (!is_partitioned(conn, t.parent)) continue;
    st = maintain_table(conn, o, t, now, cutoff, done, memo);
    if (st.ok) continue;
    // One table's failure (a lock not granted in time) does not keep the
    // others' partitions from being made; the table is retried next round.
    done.failed.push_back(t.parent);
    if (first.ok) first = st;
    if (st.connection_lost) break;
  }
  return first;
}

partition_maintainer::partition_maintainer(partition_options options) : options_(std::move(options)) {
  memo_.stop = &stop_requested_;
}

partition_maintainer::~partition_maintainer() { stop(); }

void partition_maintainer::start() {
  // Every table's series on /metrics from the start, at 0.
  for (const auto& t : maintained_tables(options_)) (void)partition_probe::instance().of(t.parent);
  thread_ = std::thread([this] { run(); });
}

void partition_maintainer::stop() {
  stop_requested_ = true;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool partition_maintainer::pause(uint32_t ms) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stopping_; });
  return !stopping_;
}

void partition_maintainer::run() {
  pg_connection conn;
  std::string last_error;  // logged once until it changes or a round works again
  // A failed round (most often a lock not granted within lock_timeout while
  // writers hold the table) is retried soon, not after a whole interval.
  constexpr uint32_t retry_ms = 5000;
  for (;;) {
    uint32_t wait_ms = options_.interval_s * 1000;
    pg_status st;
    if (!conn.connected()) {
      st = conn.connect(options_.dsn, "evpipe-partitions");
      if (st.ok) {
        // Short lock waits: a DDL waiting for its lock makes writers queue
        // behind it, so it gives up soon and tries again.
        const std::string set = "SET lock_timeout = '" + std::to_string(options_.lock_timeout_ms) +
                                "ms'; SET statement_timeout = '60s'";
        st = conn.exec(set.c_str());
      }
      if (!st.ok) conn.close();
    }
    // The route tables of the running routes (a reload may have changed them).
    partition_options o = options_;
    {
      std::lock_guard lock(published_mu);
      if (published) o.route_tables = published_tables;
    }
    for (const auto& t : maintained_tables(o)) (void)partition_probe::instance().of(t.parent);
    partition_round done;
    if (conn.connected()) {
      st = maintain_once(conn, o, done, &memo_);
      if (!st.ok && st.connection_lost) conn.close();
    }
    if (!st.ok) {
      // Counted for each table whose part failed; for all when there was no
      // connection at all.
      if (done.failed.empty()) {
        for (const auto& t : maintained_tables(o)) done.failed.push_back(t.parent);
      }
      for (const auto& table : done.failed) {
        partition_probe::instance().of(table).errors.fetch_add(1, std::memory_order_relaxed);
      }
      const std::string what = (done.failed.size() == 1 ? done.failed[0] + ": " : "") + describe(st);
      if (what != last_error) spdlog::warn("partition maintenance: {} (retrying)", what);
      last_error = what;
      wait_ms = std::min(wait_ms, retry_ms);
    } else {
      last_error.clear();
    }
    if (!pause(wait_ms)) return;
  }
}

}  // namespace evpipe::io
