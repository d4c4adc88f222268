#pragma once
// What the database must hold for the routes (`evpipe check-config
// --check-db`): each table exists, each routed column exists with a type
// whose binary form is the one the route writes, each upsert key has a
// unique index, NOT NULL columns without a default are filled, and
// evpipe_route_keys exists. Startup/CLI only; runs on the caller's connection.

#include <string>
#include <vector>

#include "config/route_config.h"
#include "io/postgres/pg_connection.h"

namespace evpipe::io {

// One line per problem, each naming the route and the key
// ('[[routes]] "devices" columns "last_seen": ...'); empty when all is well.
// schema: [postgres] schema ("" = search_path), for unqualified tables.
[[nodiscard]] std::vector<std::string> route_db_problems(pg_connection& conn, const std::vector<config::route>& routes,
                                                         const std::string& schema);

}  // namespace evpipe::io
