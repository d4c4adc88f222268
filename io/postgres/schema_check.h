#pragma once
// What evpipe needs of the database before it writes, checked by `evpipe run`
// at startup and built by `evpipe migrate`: events_mirror and dlq_events as
// the writing session resolves them (its search_path, `'events_mirror'::regclass`),
// each with the unique index its ON CONFLICT clause infers (schemas/schema.h).
//
// Startup and migrate only; runs on the caller's thread and connection.

#include <string>

#include "io/postgres/pg_connection.h"

namespace evpipe::io {

// "" when the tables are ready to be written; otherwise one line saying what
// is missing and what to do about it. `schema`: [postgres] schema ("" = the
// connection's search_path decides), here and below.
[[nodiscard]] std::string find_schema_problem(pg_connection& conn, const std::string& schema);

// Applies schemas/events.sql in one transaction (creating `schema` first, if
// set), then builds each missing
// index (schemas::indexes): CONCURRENTLY when its table holds rows. Holds a
// session advisory lock meanwhile, so concurrent migrations take turns; it
// therefore needs a session of its own (straight to the server, or a
// session-mode pool). Progress goes to the log; returns "" or the error.
[[nodiscard]] std::string migrate_schema(pg_connection& conn, const std::string& schema);

}  // namespace evpipe::io
