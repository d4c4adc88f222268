#include "io/postgres/route_check.h"

#include <algorithm>
#include <map>
#include <set>

namespace evpipe::io {

namespace {

// The PostgreSQL types whose binary input reads what the route writes for
// `t`. (timestamp without time zone reads the same bytes but means another
// instant in every zone but UTC; json has no version byte: both refused.)
bool binary_compatible(config::column_type t, const std::string& pg_type) {
  using config::column_type;
  switch (t) {
    case column_type::text: return pg_type == "text" || pg_type == "varchar" || pg_type == "bpchar";
    case column_type::int4: return pg_type == "int4";
    case column_type::int8: return pg_type == "int8";
    case column_type::float8: return pg_type == "float8";
    case column_type::boolean: return pg_type == "bool";
    case column_type::timestamptz: return pg_type == "timestamptz";
    case column_type::uuid: return pg_type == "uuid";
    case column_type::jsonb: return pg_type == "jsonb";
  }
  return false;
}

std::string one(pg_connection& conn, const char* sql, const std::string& param, bool& ok) {
  pg_result r;
  const char* params[1] = {param.c_str()};
  ok = conn.query_params(sql, 1, params, r).ok && PQntuples(r.get()) == 1 && !PQgetisnull(r.get(), 0, 0);
  return ok ? std::string(PQgetvalue(r.get(), 0, 0)) : std::string();
}

}  // namespace

std::vector<std::string> route_db_problems(pg_connection& conn, const std::vector<config::route>& routes,
                                           const std::string& schema) {
  std::vector<std::string> out;
  if (routes.empty()) return out;
  bool ok = false;
  const std::string prefix = schema.empty() ? "" : schema + ".";
  (void)one(conn, "SELECT to_regclass($1)::text", prefix + "evpipe_route_keys", ok);
  if (!ok) out.push_back("table evpipe_route_keys does not exist: run `evpipe migrate --config FILE`");
  for (const auto& r : routes) {
    if (r.table.empty()) continue;
    const std::string where = "[[routes]] \"" + r.name + "\" ";
    const std::string table = r.table.find('.') == std::string::npos ? prefix + r.table : r.table;
    std::string oid = one(conn, "SELECT to_regclass($1)::oid::text", table, ok);
    if (!ok) {
      out.push_back(where + "table: \"" + table + "\" does not exist");
      continue;
    }
    // Every column: its type, whether it is NOT NULL without a default, and
    // whether PostgreSQL generates it (GENERATED ALWAYS AS ... STORED).
    pg_result cols;
    const char* params[1] = {oid.c_str()};
    if (!conn.query_params("SELECT a.attname, t.typname, a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' "
                           "AND a.attgenerated = '', a.attgenerated <> '' FROM pg_attribute a JOIN pg_type t ON "
                           "t.oid = a.atttypid WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped",
                           1, params, cols)
             .ok) {
      out.push_back(where + "table: cannot read the columns of \"" + table + "\"");
      continue;
    }
    struct column_info {
      std::string type;
      bool must_fill = false;
      bool generated = false;
    };
    std::map<std::string, column_info> have;
    for (int i = 0; i < PQntuples(cols.get()); ++i) {
      have[PQgetvalue(cols.get(), i, 0)] = {PQgetvalue(cols.get(), i, 1), PQgetvalue(cols.get(), i, 2)[0] == 't',
                                            PQgetvalue(cols.get(), i, 3)[0] == 't'};
    }
    for (const auto& c : r.columns) {
      auto it = have.find(c.name);
      if (it == have.end()) {
        out.push_back(where + "columns \"" + c.name + "\": table \"" + table + "\" has no such column");
      } else if (it->second.generated) {
        out.push_back(where + "columns \"" + c.name + "\": \"" + table +
                      "\" generates it (GENERATED ALWAYS AS): PostgreSQL computes it, the route cannot write it");
      } else if (!binary_compatible(c.type, it->second.type)) {
        out.push_back(where + "columns \"" + c.name + "\": the route writes " + config::column_type_name(c.type) +
                      ", the column is " + it->second.type);
      }
    }
    for (const auto& [name, info] : have) {
      if (info.must_fill && !r.column(name)) {
        out.push_back(where + "columns: \"" + name + "\" of \"" + table +
                      "\" is NOT NULL without a default, and the route does not fill it");
      }
    }
    if (!r.partition_by.empty()) {
      // evpipe keeps this table's partitions (docs/partitions.md, "Route
      // tables"): it must be range-partitioned on exactly that column.
      pg_result part;
      const bool read = conn.query_params(
          "SELECT p.partstrat, p.partnatts, coalesce(a.attname::text, '') FROM pg_partitioned_table p "
          "LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
          "WHERE p.partrelid = $1::oid", 1, params, part).ok;
      const std::string how = "; create it as CREATE TABLE " + table + " (...) PARTITION BY RANGE (" +
                              r.partition_by + ") (docs/partitions.md, \"Route tables\")";
      if (!read) {
        out.push_back(where + "partition_by: cannot read how \"" + table + "\" is partitioned");
      } else if (PQntuples(part.get()) == 0) {
        out.push_back(where + "partition_by: table \"" + table + "\" is not partitioned" + how);
      } else if (std::string(PQgetvalue(part.get(), 0, 0)) != "r" || std::string(PQgetvalue(part.get(), 0, 1)) != "1" ||
                 PQgetvalue(part.get(), 0, 2) != r.partition_by) {
        out.push_back(where + "partition_by: table \"" + table + "\" is not partitioned BY RANGE (" +
                      r.partition_by + ") alone" + how);
      }
      // Its partitions are named <table>_pYYYYMMDD: 10 more characters
      // than the table's name, within PostgreSQL's 63.
      const std::string bare = table.substr(table.find('.') + 1);
      if (bare.size() > 53) {
        out.push_back(where + "partition_by: the name \"" + bare + "\" is longer than 53 characters, too long for " +
                      "its partitions' names (<table>_pYYYYMMDD)");
      }
    }
    if (r.upsert) {
      // A unique index (or primary key) on exactly the key's columns, total
      // and on plain columns: what ON CONFLICT (key) needs.
      pg_result idx;
      if (!conn.query_params("SELECT string_agg(a.attname, ',' ORDER BY a.attname) FROM pg_index i "
                             "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                             "WHERE i.indrelid = $1::oid AND i.indisunique AND i.indpred IS NULL "
                             "AND i.indexprs IS NULL GROUP BY i.indexrelid",
                             1, params, idx)
               .ok) {
        out.push_back(where + "key: cannot read the indexes of \"" + table + "\"");
        continue;
      }
      std::vector<std::string> key = r.key;
      std::sort(key.begin(), key.end());
      std::string want;
      for (const auto& k : key) want += (want.empty() ? "" : ",") + k;
      bool found = false;
      for (int i = 0; i < PQntuples(idx.get()); ++i) found |= want == PQgetvalue(idx.get(), i, 0);
      if (!found) {
        out.push_back(where + "key: \"" + table + "\" has no unique index on exactly (" + want +
                      "), which ON CONFLICT needs");
      }
    }
  }
  return out;
}

}  // namespace evpipe::io
