#pragma once
// What the `evpipe dlq` commands share: the connection, the WHERE clause of
// the filters (--reason, --topic, --since, --until) and how failures exit.

#include <string>

#include "config/config.h"
#include "io/postgres/pg_connection.h"
#include "read/dlq/dlq_commands.h"

namespace evpipe::read {

struct dlq_session {
  io::pg_connection conn;
  std::string table;  // dlq_events, schema-qualified when [postgres] schema is set
  bool has_headers = false;  // the table has the headers column (transport headers, e.g. MQTT 5's)
  // The headers column in a SELECT list: itself, or NULL for a table without it.
  [[nodiscard]] std::string headers_column() const { return has_headers ? "headers" : "NULL::jsonb"; }
  bool has_tenant = false;  // the table has tenant_id (docs/tenants.md)
  // tenant_id in a SELECT list: itself, or '' for a table without it.
  [[nodiscard]] std::string tenant_column() const { return has_tenant ? "tenant_id" : "''::text"; }
};

// Checks the filters (a reason must be one of the codes evpipe writes, a
// topic filter well formed) and connects. 0, or the exit code after the
// message was printed; `where` is the filters' SQL condition.
[[nodiscard]] int prepare_dlq(const config::settings& s, const dlq_options& o, dlq_session& db, std::string& where);

// Prints a failed query; returns 2 for a bad value (a time that is not one,
// SQLSTATE class 22), else 1.
[[nodiscard]] int report_dlq_failure(const io::pg_status& st);

}  // namespace evpipe::read
