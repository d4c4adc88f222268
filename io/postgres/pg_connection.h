#pragma once
// A thin RAII wrapper over one libpq connection, with the few operations evpipe
// needs: run a command, stream a COPY, and report failures as values
// (SQLSTATE + message) instead of exceptions.
//
// Not thread-safe: one connection belongs to one thread (a shard's sink, or
// the migrate command).

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <span>
#include <string_view>

namespace evpipe::io {

struct pg_status {
  bool ok = true;
  std::string sqlstate;  // five characters when the server reported an error
  std::string message;   // one line
  // Whether the connection is gone or can no longer write here (retry after
  // reconnecting through the DSN).
  bool connection_lost = false;
};

// What a failed statement means for the batch that ran it.
enum class pg_failure {
  none,           // it did not fail
  duplicate_key,  // 23505: resolved by marking the known keys as duplicates
  data,           // the rows are refused (class 22 data, 23 constraints, 54 limits,
                  // P0 a trigger's RAISE): retrying them unchanged cannot help
  transient,      // anything else (connection, shutdown, serialization, locks,
                  // resources, permissions): retry the whole batch later
};
[[nodiscard]] pg_failure classify(const pg_status& st) noexcept;

struct pg_result_free {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using pg_result = std::unique_ptr<PGresult, pg_result_free>;

class pg_connection {
 public:
  pg_connection() = default;
  ~pg_connection();
  pg_connection(const pg_connection&) = delete;
  pg_connection& operator=(const pg_connection&) = delete;

  // Connects with a libpq connection string or URI ("" = libpq's defaults and
  // PG* environment). Every keyword the DSN sets wins; application_name (the
  // name in pg_stat_activity) and a 5 s connect_timeout are only defaults.
  [[nodiscard]] pg_status connect(const std::string& dsn, const std::string& application_name);
  void close();
  [[nodiscard]] bool connected() const;
  [[nodiscard]] PGconn* raw() const noexcept { return conn_; }

  // Runs one or more SQL commands (simple query protocol).
  [[nodiscard]] pg_status exec(const char* sql);
  // The same, and the row count of the first command ("INSERT 0 n": n).
  [[nodiscard]] pg_status exec_counted(const char* sql, uint64_t& first_rows);
  // Runs a query and returns its result (or the error).
  [[nodiscard]] pg_status query(const char* sql, pg_result& out);
  // The same with text parameters $1..$n (unnamed statement: no session state).
  [[nodiscard]] pg_status query_params(const char* sql, int n, const char* const* params, pg_result& out);
  // COPY ... FROM STDIN with the given data; one round trip for the data.
  // `data_sent_ns`, when given, gets the steady-clock time the data was all
  // handed over (PQputCopyEnd), before the server's answer.
  [[nodiscard]] pg_status copy_in(const char* copy_sql, std::string_view data, int64_t* data_sent_ns = nullptr);
  // The same with the data in pieces, sent in order (no copy to join them).
  [[nodiscard]] pg_status copy_in(const char* copy_sql, std::span<const std::string_view> pieces,
                                  int64_t* data_sent_ns = nullptr);

  // Builds the status of a failed result (or of the connection when r is null).
  [[nodiscard]] pg_status error_of(const PGresult* r) const;

 private:
  PGconn* conn_ = nullptr;
};

// `s` quoted as an SQL string literal (standard_conforming_strings on, the
// default since PostgreSQL 9.1). NUL bytes cannot be quoted: callers refuse them.
[[nodiscard]] std::string sql_literal(std::string_view s);

}  // namespace evpipe::io
