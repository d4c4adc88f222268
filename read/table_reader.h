#pragma once
// Reads committed events back from events_mirror in position order (see
// read/position.h and docs/read.md): one `COPY (SELECT ...) TO STDOUT (FORMAT
// binary)` per window, streamed row by row, so a reader holds one row at a
// time whatever the window's size, and reads at the rate of a plain COPY.
//
// Only rows below the visibility horizon are read (their transaction id
// below pg_snapshot_xmin of the statement's snapshot): every transaction
// there has ended, so no row can later appear at or before a position a
// reader has passed. Rows of transactions still running wait for the next
// read.
//
// Owns nothing but the SQL it builds; runs on the caller's thread and
// connection (not thread-safe, like the connection).

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/postgres/pg_connection.h"
#include "read/position.h"

namespace evpipe::read {

// Rows on any of these topics and of any of these kinds: one subscription of
// a stream client, or replay's --topic and --kind options.
struct row_clause {
  std::vector<std::string> topic_filters;  // MQTT-style, any of them ([] = every topic); valid filters only
  std::vector<std::string> kinds;          // payload->>'kind', any of them ([] = every kind)
  [[nodiscard]] bool everything() const { return topic_filters.empty() && kinds.empty(); }
  [[nodiscard]] bool matches(std::string_view topic, std::string_view kind) const;
  bool operator==(const row_clause&) const = default;
  auto operator<=>(const row_clause&) const = default;
};

// Which rows to read. Every bound is optional; they combine with AND.
struct read_window {
  position after = position::start();  // rows strictly after this position
  std::optional<position> until;       // ... and at or before this one
  std::string since_time;              // created_at >= this (ISO 8601, "" = no bound)
  std::string until_time;              // created_at < this
  std::vector<row_clause> any_of;          // rows that match one of them ([] = every row)
  uint64_t limit = 0;                      // at most this many rows (0 = no limit)
  std::optional<std::string> tenant;       // tenant_id = this (docs/tenants.md); unset = every tenant
};

// One row as read; the views live until the callback returns.
struct event_row {
  position pos;
  std::string_view topic;
  std::string_view payload;    // the event, as jsonb's text
  bool payload_has_topic = false;  // the event carries its own "topic" field
  std::string_view kind;       // payload->>'kind' ("" when absent)
  std::string_view headers;    // the transport's headers as jsonb's text ("" when NULL; docs/mqtt.md)
  int64_t created_at_us = 0;   // microseconds since 1970-01-01 UTC
  std::string_view tenant;     // tenant_id ("" when tenancy is off)
};

// What the caller says after each row.
enum class row_action : uint8_t { next, stop };

class table_reader {
 public:
  // `schema`: [postgres] schema ("" = the connection's search_path).
  table_reader(io::pg_connection& conn, std::string schema);

  // "" when events_mirror can be read by position (it has the `tx` column
  // that `evpipe migrate` adds); else one line saying what to do.
  [[nodiscard]] std::string check();

  // Streams the window's rows below the horizon to `on_row`, in position
  // order. Stopping early cancels the COPY (the connection stays usable).
  //
  // A page of every row between two positions (a limit and `until`, no
  // topic, kind or time filter: the stream's catch-up of a client without
  // one) is read as a scan of the position index in order, which stops
  // after the page: the read runs in a transaction (the drop guard's, or
  // its own) with enable_bitmapscan off for that transaction only. Else
  // the range bound that keeps a table without statistics off a whole-table
  // read (select_sql) makes PostgreSQL take a bitmap scan of every row from
  // the position on and a sort of them: a client 300,000 rows behind cost
  // about 60 ms per page of 500 rows instead of 0.2
  // (docs/performance-read.md). Filtered pages keep the planner's choice: a
  // bitmap of a topic or kind index can be the only good plan for a sparse
  // filter.
  [[nodiscard]] io::pg_status read(const read_window& w, const std::function<row_action(const event_row&)>& on_row);
  // The plan PostgreSQL takes for read(w), run as read() runs it (EXPLAIN
  // ANALYZE, one line per element): for tests and diagnosis.
  [[nodiscard]] std::vector<std::string> explain_read(const read_window& w);

  // The newest position below the horizon (start() for an empty table):
  // where a reader that wants only what comes next begins.
  [[nodiscard]] io::pg_status live_edge(position& out);

  // What retention dropped (evpipe_retention_marks, written by the
  // partition maintainer in the transaction of each drop): one record per
  // drop, `seq` in the order they were made.
  struct drop_record {
    int64_t seq = 0;
    position last;           // the last position among the rows it dropped
    int64_t rows = 0;        // how many rows it dropped (all of them, also any before a reader's position)
    std::string what;        // the partition dropped, or the DEFAULT partition's rows
    std::string dropped_at;  // ISO 8601 UTC
  };
  // The drops after `after_seq` that took rows past `since`, in `seq` order
  // (none when the table does not exist: a database migrated before it).
  [[nodiscard]] io::pg_status drops_after(position since, int64_t after_seq, std::vector<drop_record>& out);
  // The newest drop's seq (0: none yet): a reader starting now has seen them all.
  [[nodiscard]] io::pg_status newest_drop(int64_t& seq);
  // Reads between begin_drop_guard() and end_drop_guard() see no drop land
  // between them: one transaction holding events_mirror in ACCESS SHARE
  // mode, which a drop (ACCESS EXCLUSIVE on the parent) waits for. It
  // begins with drops_after(since, after_seq) into `out`, so that check holds
  // for the reads after it. A no-op without the marks table.
  [[nodiscard]] io::pg_status begin_drop_guard(position since, int64_t after_seq, std::vector<drop_record>& out);
  void end_drop_guard();

  // The planner's estimate of the window's rows (for an ETA): no scan.
  [[nodiscard]] uint64_t estimate_rows(const read_window& w);

  // The SELECT a window reads (exposed for tests and EXPLAIN). `range_hint`:
  // with the redundant lower bound on tx that steers the planner to the
  // position index on a table without statistics (table_reader.cc); off for
  // estimate_rows, where PostgreSQL would count tx's bound twice.
  [[nodiscard]] std::string select_sql(const read_window& w, bool range_hint = true) const;

 private:
  io::pg_connection& conn_;
  std::string table_;  // schema-qualified when a schema is set
  // The nullable headers column (schemas/events.sql) is read when the table
  // has it; a table migrated before it existed reads as all NULL.
  bool has_headers_ = true;
  [[nodiscard]] std::string drops_sql(position since, int64_t after_seq) const;
  // evpipe_retention_marks (qualified as table_) and whether it exists: a
  // database migrated before it has none, and no drop is recorded.
  std::string marks_;
  bool has_marks_ = false;
  bool guarded_ = false;  // inside begin_drop_guard()
  io::pg_status begin_page(const read_window& w, bool& own);
  void end_page(bool own);
  io::pg_status read_rows(const read_window& w, const std::function<row_action(const event_row&)>& on_row);
};

// The error a reader at `since` gets when the `drops` took rows after it:
// what went, and where to resume instead.
[[nodiscard]] std::string describe_dropped(position since, std::span<const table_reader::drop_record> drops);

// What holds the horizon back: the oldest transaction with an id that is
// still running (a writer, or anything else that wrote), if any.
struct horizon_state {
  uint64_t horizon = 0;          // pg_snapshot_xmin(pg_current_snapshot())
  uint64_t next_tx = 0;          // pg_snapshot_xmax: the next transaction id
  double oldest_age_s = 0;       // how long the oldest running writer has run (0: none)
  int oldest_pid = 0;            // its backend pid (0: none, or not visible to this role)
  std::string oldest_application;  // its application_name
};
[[nodiscard]] io::pg_status read_horizon(io::pg_connection& conn, horizon_state& out);

// `s` quoted as an SQL string literal (io/postgres/pg_connection.h;
// table_reader makes sure standard_conforming_strings is on).
using io::sql_literal;

}  // namespace evpipe::read
