#include "io/postgres/schema_check.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "io/postgres/partitions.h"
#include "schemas/schema.h"

namespace evpipe::io {

namespace {

constexpr const char* migration_try_lock = "SELECT pg_try_advisory_lock(727274001)";
constexpr const char* migration_unlock = "SELECT pg_advisory_unlock(727274001)";

// For a table name as the session resolves it ($1): its qualified name, the
// quoted schema, whether a unique index with exactly the
// key columns $2 (in any order) can serve ON CONFLICT (valid, immediate, not
// partial, no expressions), and whether an index named $3 exists on it and if
// it is valid (a failed CREATE INDEX CONCURRENTLY leaves an invalid one).
constexpr const char* inspect_sql = R"sql(
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
       quote_ident(n.nspname),
       EXISTS (SELECT 1 FROM pg_index i
               WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indimmediate
                 AND i.indpred IS NULL AND i.indexprs IS NULL
                 AND i.indnkeyatts = cardinality($2::text[])
                 AND ARRAY(SELECT a.attname::text
                           FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                           WHERE k.ord <= i.indnkeyatts ORDER BY a.attname::text COLLATE "C")
                     = ARRAY(SELECT x FROM unnest($2::text[]) AS x ORDER BY x COLLATE "C")),
       (SELECT CASE WHEN i.indisvalid THEN 'valid' ELSE 'invalid' END
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = c.oid AND ic.relname = $3)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1::regclass
)sql";

// The unique indexes of table $1 whose key columns are exactly $2 (in any
// order), valid or not: the index's qualified name and, when a constraint
// owns it, the constraint's name.
constexpr const char* superseded_sql = R"sql(
SELECT quote_ident(n.nspname) || '.' || quote_ident(ic.relname), quote_ident(con.conname)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('u', 'p')
WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indnkeyatts = cardinality($2::text[])
  AND ARRAY(SELECT a.attname::text
            FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE k.ord <= i.indnkeyatts ORDER BY a.attname::text COLLATE "C")
      = ARRAY(SELECT x FROM unnest($2::text[]) AS x ORDER BY x COLLATE "C")
)sql";

struct table_state {
  std::string qualified;        // schema.table, quoted
  std::string schema;           // quoted
  bool has_equivalent = false;  // a unique index ON CONFLICT can use (unique specs only)
  std::string named;            // "", "valid" or "invalid": the index of the spec's name
};

// "{a,b}" from "a, b".
std::string key_array(std::string_view keys) {
  std::string out = "{";
  for (char c : keys) {
    if (c != ' ') out += c;
  }
  return out + "}";
}

// The table as evpipe's statements name it.
std::string table_name(std::string_view table, const std::string& schema) {
  return schema.empty() ? std::string(table) : schema + "." + std::string(table);
}

pg_status inspect(pg_connection& conn, const schemas::index_spec& spec, const std::string& schema, table_state& out) {
  std::string table = table_name(spec.table, schema), keys = key_array(spec.keys), name(spec.name);
  const char* params[3] = {table.c_str(), keys.c_str(), name.c_str()};
  pg_result r;
  pg_status st = conn.query_params(inspect_sql, 3, params, r);
  if (!st.ok) return st;
  out.qualified = PQgetvalue(r.get(), 0, 0);
  out.schema = PQgetvalue(r.get(), 0, 1);
  out.has_equivalent = PQgetvalue(r.get(), 0, 2)[0] == 't';
  out.named = PQgetisnull(r.get(), 0, 3) ? "" : PQgetvalue(r.get(), 0, 3);
  return {};
}

std::string describe(const pg_status& st) { return st.sqlstate.empty() ? st.message : st.sqlstate + " " + st.message; }

// A unique index that serves a spec but lists its keys in another order (one
// built by an earlier evpipe, or by hand) works as well; it may write more
// slowly (schemas/schema.h says why the spec's order). `migrate` leaves it,
// as rebuilding a large index is the operator's call, and says how.
void suggest_key_order(pg_connection& conn, const schemas::index_spec& spec, const table_state& t) {
  const std::string keys = key_array(spec.keys), in_order = "(" + std::string(spec.keys) + ")";
  const char* params[2] = {t.qualified.c_str(), keys.c_str()};
  pg_result r;
  if (!conn.query_params(superseded_sql, 2, params, r).ok) return;
  std::string other;
  for (int i = 0, n = PQntuples(r.get()); i < n; ++i) {
    const char* index[1] = {PQgetvalue(r.get(), i, 0)};
    pg_result def;
    if (!conn.query_params("SELECT pg_get_indexdef($1::regclass)", 1, index, def).ok) return;
    if (std::string(PQgetvalue(def.get(), 0, 0)).find(in_order) != std::string::npos) return;  // one in this order
    if (other.empty()) other = index[0];
  }
  if (other.empty()) return;
  spdlog::info(
      "{}: its unique index {} lists the columns of {} in another order; it works, and evpipe now builds it in this "
      "order, which PostgreSQL writes faster (docs/tenants.md). To change it without blocking writers: CREATE UNIQUE "
      "INDEX CONCURRENTLY {}_v2 ON {} {}; then DROP INDEX CONCURRENTLY {}",
      t.qualified, other, in_order, spec.name, t.qualified, in_order, other);
}

}  // namespace

std::string find_schema_problem(pg_connection& conn, const std::string& schema) {
  for (const auto& spec : schemas::indexes) {
    if (!spec.unique) continue;  // the others only make reads faster
    table_state t;
    pg_status st = inspect(conn, spec, schema, t);
    std::string table = table_name(spec.table, schema);
    if (!st.ok) {
      if (st.sqlstate == "42P01" || st.sqlstate == "3F000") {
        return "table " + table + " does not exist: run `evpipe migrate --config FILE` first";
      }
      return "cannot inspect table " + table + ": " + describe(st);
    }
    if (!t.has_equivalent && is_partitioned(conn, t.qualified)) {
      // A partitioned table cannot have this index: its key table settles
      // redeliveries instead (io/postgres/partitions.h).
      const std::string keys = table_name(spec.table == schemas::mirror_table ? "evpipe_mirror_keys" : "evpipe_dlq_keys", schema);
      pg_status exists;
      pg_result r;
      const char* params[1] = {keys.c_str()};
      exists = conn.query_params("SELECT to_regclass($1) IS NOT NULL", 1, params, r);
      if (!exists.ok || PQgetvalue(r.get(), 0, 0)[0] != 't') {
        return "table " + keys + " (the keys of the partitioned " + t.qualified +
               ") does not exist: run `evpipe migrate --config FILE`";
      }
      continue;
    }
    if (!t.has_equivalent) {
      std::string found = schema.empty() ? " (the " + table + " this connection's search_path finds)" : "";
      return "table " + t.qualified + found + " lacks a unique index on (" + std::string(spec.keys) +
             "), without which duplicates would be stored: run `evpipe migrate --config FILE`";
    }
  }
  // What the shards' writes need of the role. The staging table is created
  // only when a batch meets stored keys; without the privilege that batch
  // would be retried forever, so it is checked here.
  pg_result r;
  std::string mirror = table_name(schemas::mirror_table, schema), dlq = table_name(schemas::dlq_table, schema);
  const char* tables[2] = {mirror.c_str(), dlq.c_str()};
  pg_status st = conn.query_params(
      "SELECT has_database_privilege(current_database(), 'TEMPORARY'), has_table_privilege($1, 'INSERT'), "
      "has_table_privilege($2, 'INSERT'), current_user, current_database()",
      2, tables, r);
  if (!st.ok) return "cannot check the role's privileges: " + describe(st);
  std::string role = PQgetvalue(r.get(), 0, 3), database = PQgetvalue(r.get(), 0, 4);
  if (PQgetvalue(r.get(), 0, 0)[0] != 't') {
    return "role " + role + " may not create temporary tables in database " + database +
           " (evpipe needs one, dropped at commit, for batches that meet stored keys): GRANT TEMPORARY ON DATABASE " +
           database + " TO " + role;
  }
  for (int col : {1, 2}) {
    if (PQgetvalue(r.get(), 0, col)[0] != 't') {
      return "role " + role + " may not INSERT into " + (col == 1 ? mirror : dlq);
    }
  }
  return "";
}

std::string migrate_schema(pg_connection& conn, const std::string& schema) {
  // Concurrent migrations take turns, waiting in a loop of try-locks outside
  // any transaction: a session blocked in pg_advisory_lock holds a
  // transaction open, which the lock holder's CREATE INDEX CONCURRENTLY then
  // waits for (PostgreSQL breaks that deadlock by failing one side, 40P01).
  pg_status st;
  for (bool logged = false;; std::this_thread::sleep_for(std::chrono::milliseconds(100))) {
    pg_result r;
    st = conn.query(migration_try_lock, r);
    if (!st.ok) return "cannot take the migration lock: " + describe(st);
    if (PQgetvalue(r.get(), 0, 0)[0] == 't') break;
    if (!logged) {
      spdlog::info("another evpipe migrate is running on this database: waiting for it");
      logged = true;
    }
  }
  std::string sql = "BEGIN;\n";
  if (!schema.empty()) {
    // events.sql names its tables without a schema: they go to the first one in the search_path.
    sql += "CREATE SCHEMA IF NOT EXISTS " + schema + ";\nSET LOCAL search_path = " + schema + ";\n";
  }
  sql += schemas::events_ddl();
  sql += "\nCOMMIT;";
  st = conn.exec(sql.c_str());
  if (!st.ok) {
    (void)conn.exec("ROLLBACK");
    return "migration failed: " + describe(st);
  }
  for (const auto& spec : schemas::indexes) {
    table_state t;
    st = inspect(conn, spec, schema, t);
    if (!st.ok) return "cannot inspect table " + table_name(spec.table, schema) + ": " + describe(st);
    if (spec.unique && t.has_equivalent) {
      suggest_key_order(conn, spec, t);
      continue;
    }
    if (!spec.unique && t.named == "valid") continue;
    // On a partitioned table a unique index must hold the partition key: the
    // key tables stand in for these (io/postgres/partitions.h). Its other
    // indexes are built plainly, as PostgreSQL builds none CONCURRENTLY on
    // a partitioned table (docs/partitions.md).
    const bool partitioned = is_partitioned(conn, t.qualified);
    if (partitioned && spec.unique) continue;
    std::string index = t.schema + "." + std::string(spec.name);
    if (t.named == "valid") {
      return "index " + index + " exists but is not a unique index on (" + std::string(spec.keys) +
             "): rename or drop it";
    }
    if (t.named == "invalid") {
      // Left by an interrupted concurrent build: build it again.
      spdlog::warn("dropping invalid index {} to build it again", index);
      st = conn.exec(("DROP INDEX CONCURRENTLY IF EXISTS " + index).c_str());
      if (!st.ok) return "cannot drop index " + index + ": " + describe(st);
    }
    pg_result rows;
    st = conn.query(("SELECT EXISTS (SELECT 1 FROM " + t.qualified + ")").c_str(), rows);
    if (!st.ok) return "cannot read table " + t.qualified + ": " + describe(st);
    bool concurrently = PQgetvalue(rows.get(), 0, 0)[0] == 't' && !partitioned;
    std::string create = std::string(spec.unique ? "CREATE UNIQUE INDEX " : "CREATE INDEX ") +
                         (concurrently ? "CONCURRENTLY " : "") + std::string(spec.name) + " ON " + t.qualified +
                         " (" + std::string(spec.keys) + ")";
    spdlog::info("building index {}{}", index, concurrently ? " concurrently (the table has rows)" : "");
    st = conn.exec(create.c_str());
    if (!st.ok) {
      // A failed concurrent build leaves an invalid index that would slow
      // every write; drop it.
      if (concurrently) (void)conn.exec(("DROP INDEX CONCURRENTLY IF EXISTS " + index).c_str());
      std::string hint = st.sqlstate == "23505" ? " (the table holds duplicates of these keys: remove them first)" : "";
      return "cannot build index " + index + ": " + describe(st) + hint;
    }
  }
  // The swap: an index a spec supersedes goes once the spec's is built (the
  // loop above returned on any failure). Writers never wait on the build
  // (CONCURRENTLY) and keep one unique index at every moment.
  for (const auto& spec : schemas::indexes) {
    if (spec.replaces.empty()) continue;
    std::string table = table_name(spec.table, schema), keys = key_array(spec.replaces);
    const char* params[2] = {table.c_str(), keys.c_str()};
    pg_result r;
    st = conn.query_params(superseded_sql, 2, params, r);
    if (!st.ok) return "cannot inspect the indexes of " + table + ": " + describe(st);
    for (int i = 0, n = PQntuples(r.get()); i < n; ++i) {
      std::string index = PQgetvalue(r.get(), i, 0);
      std::string sql;
      if (PQgetisnull(r.get(), i, 1)) {
        sql = "DROP INDEX CONCURRENTLY IF EXISTS " + index;
      } else {
        // A UNIQUE constraint owns it: dropping the constraint drops the index
        // (a short ACCESS EXCLUSIVE lock, no scan).
        sql = "ALTER TABLE " + table + " DROP CONSTRAINT IF EXISTS " + std::string(PQgetvalue(r.get(), i, 1));
      }
      spdlog::info("dropping index {}: superseded by the unique index on ({})", index, spec.keys);
      st = conn.exec(sql.c_str());
      if (!st.ok) return "cannot drop index " + index + ": " + describe(st);
    }
  }
  (void)conn.exec(migration_unlock);
  return "";
}

}  // namespace evpipe::io
