#include "io/postgres/table_writer.h"

#include <xxhash.h>

#include <algorithm>

#include <absl/container/flat_hash_set.h>

namespace evpipe::io {

std::string migrate_route_keys(pg_connection& conn, const std::string& schema) {
  std::string sql(route_keys_ddl);
  sql.replace(sql.find("{}"), 2, schema.empty() ? "" : schema + ".");
  pg_status st = conn.exec(sql.c_str());
  return st.ok ? "" : "cannot create evpipe_route_keys: " + st.message;
}

table_writer::table_writer(const stages::route::route_set& routes, const std::string& schema) : routes_(routes) {
  std::string prefix = schema.empty() ? "" : schema + ".";
  claim_sql_ = "INSERT INTO " + prefix +
               "evpipe_route_keys (key) SELECT decode(k, 'hex') FROM unnest($1::text[]) AS k "
               "ON CONFLICT (key) DO NOTHING RETURNING encode(key, 'hex')";
  copy_sql_.resize(routes.size());
  stage_sql_.resize(routes.size());
  merge_sql_.resize(routes.size());
  for (size_t i = 0; i < routes.size(); ++i) {
    const auto& r = routes.at(i).cfg;
    if (r.table.empty()) continue;
    // Table and column names are lowercase identifiers (config checks them),
    // so they need no quoting.
    std::string cols;
    for (size_t c = 0; c < r.columns.size(); ++c) cols += (c ? ", " : "") + r.columns[c].name;
    if (!r.upsert) {
      copy_sql_[i] = "COPY " + r.table + " (" + cols + ") FROM STDIN (FORMAT binary)";
      continue;
    }
    const std::string stage = "pg_temp.evpipe_up_" + std::to_string(i);
    // The staging table takes the target's column types, so the binary
    // tuples mean the same in both; dropped at commit or rollback.
    stage_sql_[i] = "CREATE TEMP TABLE evpipe_up_" + std::to_string(i) + " ON COMMIT DROP AS SELECT " + cols +
                    " FROM " + r.table + " WITH NO DATA";
    copy_sql_[i] = "COPY " + stage + " (" + cols + ") FROM STDIN (FORMAT binary)";
    std::string key, updates;
    for (size_t k = 0; k < r.key.size(); ++k) key += (k ? ", " : "") + r.key[k];
    for (const auto& c : r.columns) {
      bool is_key = std::find(r.key.begin(), r.key.end(), c.name) != r.key.end();
      if (!is_key) updates += (updates.empty() ? "" : ", ") + c.name + " = EXCLUDED." + c.name;
    }
    std::string order = key + (r.order_by.empty() ? "" : ", " + r.order_by + " DESC NULLS LAST") + ", ctid DESC";
    std::string sql = "INSERT INTO " + r.table + " AS t (" + cols + ") SELECT DISTINCT ON (" + key + ") " + cols +
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
void append_hex(std::string& out, std::string_view key) {
  static constexpr char digits[] = "0123456789abcdef";
  auto h = XXH3_128bits(key.data(), key.size());
  for (uint64_t part : {h.high64, h.low64}) {
    for (int i = 60; i >= 0; i -= 4) out.push_back(digits[(part >> i) & 0xF]);
  }
}
}  // namespace

pg_status table_writer::claim_keys(pg_connection& conn, stages::write_batch& batch, size_t first_outcome,
                                   size_t last_outcome) {
  const auto& rows = batch.rows();
  // Events with an events_mirror row: rows_ is in arrival order, so one pass
  // over both lists, side by side, tells them apart.
  keys_param_.assign("{");
  std::vector<std::pair<uint32_t, size_t>> claimed;  // outcome, offset of its hex key in keys_param_
  size_t mirror_at = 0;
  uint32_t last = UINT32_MAX;
  for (const auto& r : batch.routed_rows()) {
    if (r.outcome_index < first_outcome || r.outcome_index >= last_outcome || r.outcome_index == last) continue;
    last = r.outcome_index;
    while (mirror_at < rows.size() && rows[mirror_at].outcome_index < r.outcome_index) ++mirror_at;
    if (mirror_at < rows.size() && rows[mirror_at].outcome_index == r.outcome_index) continue;
    if (batch.outcomes()[r.outcome_index].kind != stages::outcome_kind::mirrored) continue;
    if (keys_param_.size() > 1) keys_param_.push_back(',');
    claimed.emplace_back(r.outcome_index, keys_param_.size());
    append_hex(keys_param_, batch.text(r.key));
  }
  if (claimed.empty()) return {};
  keys_param_.push_back('}');
  const char* params[1] = {keys_param_.c_str()};
  pg_result res;
  pg_status st = conn.query_params(claim_sql_.c_str(), 1, params, res);
  if (!st.ok) return st;
  absl::flat_hash_set<std::string_view> fresh;
  for (int i = 0, n = PQntuples(res.get()); i < n; ++i) fresh.insert(std::string_view(PQgetvalue(res.get(), i, 0), 32));
  for (auto [outcome, at] : claimed) {
    if (!fresh.contains(std::string_view(keys_param_).substr(at, 32))) batch.mark_event_duplicate(outcome);
  }
  return {};
}

pg_status table_writer::write(pg_connection& conn, const stages::write_batch& batch, size_t first_outcome,
                              size_t last_outcome) {
  for (size_t r = 0; r < batch.route_stream_count() && r < routes_.size(); ++r) {
    batch.route_copy_slice(r, first_outcome, last_outcome, slice_);
    if (slice_.empty()) continue;
    pg_status st;
    if (!stage_sql_[r].empty()) st = conn.exec(stage_sql_[r].c_str());
    if (st.ok) st = conn.copy_in(copy_sql_[r].c_str(), slice_);
    if (st.ok && !merge_sql_[r].empty()) st = conn.exec(merge_sql_[r].c_str());
    if (!st.ok) return st;
  }
  return {};
}

}  // namespace evpipe::io
