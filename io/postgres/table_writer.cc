#include "io/postgres/table_writer.h"

#include <xxhash.h>

#include <algorithm>
#include <tuple>

#include <absl/container/flat_hash_set.h>

namespace evpipe::io {

std::string migrate_route_keys(pg_connection& conn, const std::string& schema) {
  const std::string prefix = schema.empty() ? "" : schema + ".";
  const std::string_view ddl = route_keys_ddl;
  const size_t at = ddl.find("{}");
  const std::string sql = std::string(ddl.substr(0, at)) + prefix + std::string(ddl.substr(at + 2));
  pg_status st = conn.exec(sql.c_str());
  if (!st.ok) return "cannot create evpipe_route_keys: " + st.message;
  // The created_at index: "valid", "invalid" (a concurrent build that
  // failed) or "" (none), and whether the table has rows.
  const std::string table = prefix + "evpipe_route_keys";
  const std::string index(route_keys_created_at_index);
  const char* params[2] = {table.c_str(), index.c_str()};
  pg_result res;
  const std::string inspect_sql =
      "SELECT coalesce((SELECT CASE WHEN i.indisvalid THEN 'valid' ELSE 'invalid' END FROM pg_index i "
      "JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = to_regclass($1) AND ic.relname = $2), ''), "
      "EXISTS (SELECT 1 FROM " + table + ")";
  st = conn.query_params(inspect_sql.c_str(), 2, params, res);
  if (!st.ok) return "cannot inspect evpipe_route_keys: " + st.message;
  const std::string state = PQgetvalue(res.get(), 0, 0);
  const bool has_rows = PQgetvalue(res.get(), 0, 1)[0] == 't';
  if (state == "valid") return "";
  if (state == "invalid") {
    st = conn.exec(("DROP INDEX CONCURRENTLY IF EXISTS " + prefix + index).c_str());
    if (!st.ok) return "cannot drop invalid index " + prefix + index + ": " + st.message;
  }
  const std::string create = std::string("CREATE INDEX ") + (has_rows ? "CONCURRENTLY " : "") + "IF NOT EXISTS " +
                             index + " ON " + table + " (created_at)";
  st = conn.exec(create.c_str());
  if (!st.ok) {
    if (has_rows) (void)conn.exec(("DROP INDEX CONCURRENTLY IF EXISTS " + prefix + index).c_str());
    return "cannot build index " + prefix + index + ": " + st.message;
  }
  return "";
}

namespace {
// An append route whose identity a unique index of its table could settle
// (table_writer::inspect looks for the index): identity columns, each never
// NULL (a unique index lets NULLs repeat).
bool may_be_table_keyed(const config::route& r) {
  if (r.upsert || r.envelope_standard || r.mirror || r.idempotency_digest || r.idempotency.empty()) return false;
  for (const auto& name : r.idempotency) {
    const config::route_column* c = r.column(name);
    if (c == nullptr) return false;
    const bool never_null = c->required || c->has_default || c->source == config::column_source::topic ||
                            c->source == config::column_source::received_at;
    if (!never_null) return false;
  }
  return true;
}
}  // namespace

table_writer::table_writer(const stages::route::route_set& routes, const std::string& schema) : routes_(routes) {
  std::string prefix = schema.empty() ? "" : schema + ".";
  claim_sql_ = "INSERT INTO " + prefix +
               "evpipe_route_keys (key) SELECT decode(k, 'hex') FROM unnest($1::text[]) AS k "
               "ON CONFLICT (key) DO NOTHING RETURNING encode(key, 'hex')";
  copy_keys_sql_ = "COPY " + prefix + "evpipe_route_keys (key) FROM STDIN (FORMAT binary)";
  needs_key_.resize(routes.size());
  for (size_t i = 0; i < routes.size(); ++i) needs_key_[i] = !routes.at(i).self_idempotent;
  time_field_.assign(routes.size(), -1);
  for (size_t i = 0; i < routes.size(); ++i) {
    // The first timestamptz identity column whose value the message itself
    // carries (a redelivery has the same), not received_at.
    const auto& r = routes.at(i);
    for (size_t f = 0; f < r.identity_columns.size(); ++f) {
      const auto& col = r.columns[r.identity_columns[f]].cfg;
      if (col.type == config::column_type::timestamptz && col.source != config::column_source::received_at) {
        time_field_[i] = static_cast<int>(f);
        break;
      }
    }
  }
  copy_sql_.resize(routes.size());
  tables_.resize(routes.size());
  keyed_stage_sql_.resize(routes.size());
  keyed_copy_sql_.resize(routes.size());
  keyed_merge_sql_.resize(routes.size());
  stage_sql_.resize(routes.size());
  merge_sql_.resize(routes.size());
  for (size_t i = 0; i < routes.size(); ++i) {
    const auto& r = routes.at(i).cfg;
    if (r.table.empty()) continue;
    // A bare table name is in [postgres] schema, as for the start-up check
    // (route_check.cc) and the partition maintainer: never the search_path's
    // table of that name. Table and column names are lowercase identifiers
    // (config checks them), so they need no quoting.
    const std::string table = r.table.find('.') == std::string::npos ? prefix + r.table : r.table;
    tables_[i] = table;
    std::string cols;
    for (size_t c = 0; c < r.columns.size(); ++c) cols += (c ? ", " : "") + r.columns[c].name;
    if (!r.upsert) {
      copy_sql_[i] = "COPY " + table + " (" + cols + ") FROM STDIN (FORMAT binary)";
      if (may_be_table_keyed(r)) {
        const std::string n = "evpipe_keyed_" + std::to_string(i);
        std::string id;
        for (const auto& c : r.idempotency) id += (id.empty() ? "" : ", ") + c;
        keyed_stage_sql_[i] =
            "CREATE TEMP TABLE " + n + " ON COMMIT DROP AS SELECT " + cols + " FROM " + table + " WITH NO DATA";
        keyed_copy_sql_[i] = "COPY pg_temp." + n + " (" + cols + ") FROM STDIN (FORMAT binary)";
        // OVERRIDING SYSTEM VALUE: the route's value for an identity column
        // GENERATED ALWAYS, as COPY takes it.
        keyed_merge_sql_[i] = "INSERT INTO " + table + " (" + cols + ") OVERRIDING SYSTEM VALUE SELECT " + cols +
                              " FROM pg_temp." + n +
                              " ON CONFLICT (" + id + ") DO NOTHING; DROP TABLE pg_temp." + n;
      }
      continue;
    }
    const std::string stage = "pg_temp.evpipe_up_" + std::to_string(i);
    // The staging table takes the target's column types, so the binary
    // tuples mean the same in both; dropped at commit or rollback.
    stage_sql_[i] = "CREATE TEMP TABLE evpipe_up_" + std::to_string(i) + " ON COMMIT DROP AS SELECT " + cols +
                    " FROM " + table + " WITH NO DATA";
    copy_sql_[i] = "COPY " + stage + " (" + cols + ") FROM STDIN (FORMAT binary)";
    std::string key, updates;
    for (size_t k = 0; k < r.key.size(); ++k) key += (k ? ", " : "") + r.key[k];
    for (const auto& c : r.columns) {
      bool is_key = std::find(r.key.begin(), r.key.end(), c.name) != r.key.end();
      if (!is_key) updates += (updates.empty() ? "" : ", ") + c.name + " = EXCLUDED." + c.name;
    }
    std::string order = key + (r.order_by.empty() ? "" : ", " + r.order_by + " DESC NULLS LAST") + ", ctid DESC";
    std::string sql = "INSERT INTO " + table + " AS t (" + cols + ") OVERRIDING SYSTEM VALUE SELECT DISTINCT ON (" +
                      key + ") " + cols +
                      " FROM " + stage + " ORDER BY " + order + " ON CONFLICT (" + key + ") DO ";
    if (updates.empty()) {
      sql += "NOTHING";
    } else {
      sql += "UPDATE SET " + updates;
      if (!r.order_by.empty()) {
        // An older message never overwrites newer state; a row without an
        // order yet takes any message that has one.
        sql += " WHERE EXCLUDED." + r.order_by + " > t." + r.order_by + " OR (t." + r.order_by +
               " IS NULL AND EXCLUDED." + r.order_by + " IS NOT NULL)";
      }
    }
    merge_sql_[i] = std::move(sql) + "; DROP TABLE " + stage;
  }
}

namespace {
constexpr char hex_digits[] = "0123456789abcdef";

uint32_t be32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t(u[0]) << 24) | (uint32_t(u[1]) << 16) | (uint32_t(u[2]) << 8) | u[3];
}

// The time field `field` of an identity (the route's name, NUL, then the
// identity columns' binary COPY fields, stages/route/extract.cc): a
// timestamptz is 8 bytes, microseconds since 2000 as a signed big-endian
// int64. Returned with its sign bit flipped, so that byte order is time
// order; false for NULL or a malformed identity.
bool identity_time(std::string_view identity, size_t name_size, int field, uint64_t& at) {
  if (field < 0 || identity.size() <= name_size || identity[name_size] != '\0') return false;
  size_t pos = name_size + 1;
  for (int f = 0; pos + 4 <= identity.size(); ++f) {
    const uint32_t len = be32(identity.data() + pos);
    if (f == field) {
      if (len != 8 || pos + 12 > identity.size()) return false;
      at = (uint64_t(be32(identity.data() + pos + 4)) << 32) | be32(identity.data() + pos + 8);
      at ^= uint64_t(1) << 63;
      return true;
    }
    pos += len == 0xFFFFFFFFu ? 4 : 4 + size_t(len);
  }
  return false;
}

// A claim's key bytes (8 bytes of time when timed, then the 16-byte hash),
// each byte through `put`.
template <typename Put>
void key_bytes(bool timed, uint64_t at, uint64_t hi, uint64_t lo, Put put) {
  if (timed) {
    for (int b = 56; b >= 0; b -= 8) put(static_cast<unsigned char>(at >> b));
  }
  for (uint64_t part : {hi, lo}) {
    for (int b = 56; b >= 0; b -= 8) put(static_cast<unsigned char>(part >> b));
  }
}
}  // namespace

pg_status table_writer::claim_keys(pg_connection& conn, stages::write_batch& batch, size_t first_outcome,
                                   size_t last_outcome, bool tolerate_conflicts) {
  const auto& rows = batch.rows();
  const auto& routed = batch.routed_rows();
  // The events to claim a key for: their rows are only in routed tables (no
  // events_mirror row, which settles its event by its own unique key), and
  // one of their routes needs the key. rows_ and routed_ are both in
  // arrival order, an event's routed rows next to each other: one pass over
  // both, side by side.
  claimed_.clear();
  size_t mirror_at = 0;
  for (size_t i = 0; i < routed.size();) {
    const uint32_t outcome = routed[i].outcome_index;
    bool needs_key = false;
    size_t j = i;
    for (; j < routed.size() && routed[j].outcome_index == outcome; ++j) {
      needs_key |= routed[j].route >= needs_key_.size() || needs_key_[routed[j].route] || routed[j].foreign_identity;
    }
    const auto key = routed[i].key;
    const size_t route = routed[i].route;
    i = j;
    if (!needs_key || outcome < first_outcome || outcome >= last_outcome) continue;
    while (mirror_at < rows.size() && rows[mirror_at].outcome_index < outcome) ++mirror_at;
    if (mirror_at < rows.size() && rows[mirror_at].outcome_index == outcome) continue;
    if (batch.outcomes()[outcome].kind != stages::outcome_kind::mirrored) continue;
    std::string_view identity = batch.text(key);
    auto h = XXH3_128bits(identity.data(), identity.size());
    uint64_t at = 0;
    // The identity decides alone whether and with which time, so a
    // redelivery gets the same key.
    const bool timed = route < time_field_.size() &&
                       identity_time(identity, routes_.at(route).cfg.name.size(), time_field_[route], at);
    claimed_.push_back({outcome, timed, at, h.high64, h.low64});
  }
  // events_mirror rows of bare messages (mirror = true): their
  // idempotency_key column is NULL, so the table's unique key cannot tell a
  // redelivery; the identity goes to evpipe_route_keys like a routed row's.
  // (Events with routed rows besides were left to this loop above.)
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto outcome = rows[i].outcome_index;
    if (outcome < first_outcome || outcome >= last_outcome) continue;
    if (!rows[i].identity_key) continue;
    std::string_view identity = batch.text(rows[i].key);
    if (batch.outcomes()[outcome].kind != stages::outcome_kind::mirrored) continue;
    auto h = XXH3_128bits(identity.data(), identity.size());
    claimed_.push_back({outcome, false, 0, h.high64, h.low64});
  }
  if (claimed_.empty()) return {};
  // In key order: a B-tree takes sorted keys at about half the cost of
  // random ones (neighbouring inserts land on pages just visited). A key
  // twice in one batch (only with a tiny dedup window) is stored once.
  auto order = [](const claim& c) { return std::tuple(c.timed, c.at, c.hi, c.lo); };
  std::sort(claimed_.begin(), claimed_.end(), [&](const claim& a, const claim& b) { return order(a) < order(b); });
  for (size_t k = 1; k < claimed_.size(); ++k) {
    if (order(claimed_[k]) == order(claimed_[k - 1])) {
      batch.mark_event_duplicate(claimed_[k].outcome);
      claimed_.erase(claimed_.begin() + static_cast<ptrdiff_t>(k--));
    }
  }
  if (!tolerate_conflicts) {
    // The fast path: one binary COPY of 16-byte keys. A key stored before (a
    // redelivery after a restart) fails it with 23505, and the caller runs
    // the transaction again with tolerate_conflicts.
    keys_copy_.assign(stages::copy_format::header);
    for (const auto& c : claimed_) {
      keys_copy_.append("\0\1\0\0\0", 5);  // one field of 24 or 16 bytes
      keys_copy_.push_back(c.timed ? '\x18' : '\x10');
      key_bytes(c.timed, c.at, c.hi, c.lo, [&](unsigned char b) { keys_copy_.push_back(static_cast<char>(b)); });
    }
    keys_copy_.append(stages::copy_format::trailer);
    return conn.copy_in(copy_keys_sql_.c_str(), keys_copy_);
  }
  keys_param_.assign("{");
  param_at_.clear();
  for (const auto& c : claimed_) {
    if (keys_param_.size() > 1) keys_param_.push_back(',');
    param_at_.push_back(static_cast<uint32_t>(keys_param_.size()));
    key_bytes(c.timed, c.at, c.hi, c.lo, [&](unsigned char b) {
      keys_param_.push_back(hex_digits[b >> 4]);
      keys_param_.push_back(hex_digits[b & 0xF]);
    });
  }
  keys_param_.push_back('}');
  const char* params[1] = {keys_param_.c_str()};
  pg_result res;
  pg_status st = conn.query_params(claim_sql_.c_str(), 1, params, res);
  if (!st.ok) return st;
  absl::flat_hash_set<std::string_view> fresh;
  for (int i = 0, n = PQntuples(res.get()); i < n; ++i) {
    fresh.insert(std::string_view(PQgetvalue(res.get(), i, 0), size_t(PQgetlength(res.get(), i, 0))));
  }
  for (size_t k = 0; k < claimed_.size(); ++k) {
    if (!fresh.contains(std::string_view(keys_param_).substr(param_at_[k], claimed_[k].timed ? 48 : 32))) {
      batch.mark_event_duplicate(claimed_[k].outcome);
    }
  }
  return {};
}

pg_status table_writer::inspect(pg_connection& conn) {
  table_keyed_.assign(routes_.size(), 0);
  for (size_t i = 0; i < routes_.size(); ++i) {
    needs_key_[i] = !routes_.at(i).self_idempotent;
    if (keyed_merge_sql_[i].empty()) continue;  // not a candidate (constructor)
    const auto& r = routes_.at(i).cfg;
    std::string names = "{";
    for (const auto& n : r.idempotency) names += (names.size() > 1 ? "," : "") + n;
    names += "}";
    const std::string count = std::to_string(r.idempotency.size());
    const char* params[3] = {tables_[i].c_str(), names.c_str(), count.c_str()};
    pg_result res;
    // A valid unique index whose key columns are exactly the identity
    // columns: no expressions, no predicate (INCLUDE columns do not matter).
    pg_status st = conn.query_params(
        "SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid "
        "AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = $3::int "
        "AND NOT EXISTS (SELECT 1 FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) AS k(attnum) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE a.attname <> ALL($2::text[])) LIMIT 1",
        3, params, res);
    if (!st.ok) return st;
    if (PQntuples(res.get()) > 0) {
      table_keyed_[i] = 1;
      needs_key_[i] = 0;
    }
  }
  return {};
}

std::vector<std::string> table_writer::table_keyed_routes() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < table_keyed_.size(); ++i) {
    if (table_keyed_[i]) out.push_back(routes_.at(i).cfg.name);
  }
  return out;
}

pg_status table_writer::write(pg_connection& conn, const stages::write_batch& batch, size_t first_outcome,
                              size_t last_outcome, bool tolerate_conflicts) {
  pending_.assign(routes_.size(), {});
  for (size_t r = 0; r < batch.route_stream_count() && r < routes_.size(); ++r) {
    const auto data = batch.route_copy(r, first_outcome, last_outcome, slice_);
    if (data.tuples == 0) continue;
    const size_t n = data.tuples;
    pg_status st;
    uint64_t merged = 0;
    if (tolerate_conflicts && r < table_keyed_.size() && table_keyed_[r]) {
      // A row whose identity the table holds was stored before (a
      // redelivery after a restart): left out by ON CONFLICT DO NOTHING.
      st = conn.exec(keyed_stage_sql_[r].c_str());
      if (st.ok) st = conn.copy_in(keyed_copy_sql_[r].c_str(), data.parts());
      if (st.ok) st = conn.exec_counted(keyed_merge_sql_[r].c_str(), merged);
      if (!st.ok) return st;
      pending_[r].appended = merged;
      continue;
    }
    if (!stage_sql_[r].empty()) st = conn.exec(stage_sql_[r].c_str());
    if (st.ok) st = conn.copy_in(copy_sql_[r].c_str(), data.parts());
    if (st.ok && !merge_sql_[r].empty()) st = conn.exec_counted(merge_sql_[r].c_str(), merged);
    if (!st.ok) return st;
    if (merge_sql_[r].empty()) {
      pending_[r].appended = n;
    } else {
      // Every staged message that did not become a row's state: older than
      // the stored row, or than another message of the batch for its key.
      pending_[r].upserted = merged;
      pending_[r].skipped_older = n > merged ? n - merged : 0;
    }
  }
  return {};
}

void table_writer::committed() {
  for (size_t r = 0; r < pending_.size(); ++r) {
    auto* c = routes_.at(r).counts;
    if (c == nullptr) continue;
    c->appended.fetch_add(pending_[r].appended, std::memory_order_relaxed);
    c->upserted.fetch_add(pending_[r].upserted, std::memory_order_relaxed);
    c->skipped_older.fetch_add(pending_[r].skipped_older, std::memory_order_relaxed);
  }
  pending_.clear();
}

}  // namespace evpipe::io
