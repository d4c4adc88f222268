#include "io/postgres/postgres_sink.h"

#include "io/postgres/partition_sql.h"
#include "io/postgres/sink_refusals.h"

#include <absl/container/flat_hash_map.h>

#include <algorithm>

#include "stages/route/active.h"

namespace evpipe::io {

using namespace sink_refusals;

namespace {
// `{}` stands for the tables' schema prefix ("" or "name."; see postgres_sink()).
constexpr std::string_view copy_mirror_sql = "COPY {}events_mirror (topic, payload) FROM STDIN (FORMAT binary)";
// Nothing outlives a transaction on the server (no temporary table, no named
// prepared statement, no SET), so that any server connection may serve the
// next transaction: a transaction-mode pooler (PgBouncer pool_mode =
// transaction) hands out a different one each time, and recycles them. The
// staging table lives and dies inside the transaction that resolves conflicts
// (ON COMMIT DROP; a rollback drops it too). It is created only on that path,
// after a unique violation, so the fast path stays one COPY.
constexpr const char* create_stage_sql =
    "CREATE TEMP TABLE evpipe_stage (topic VARCHAR(255), payload JSONB, headers JSONB, tenant_id TEXT NOT NULL DEFAULT '') "
    "ON COMMIT DROP";
constexpr const char* copy_stage_sql = "COPY pg_temp.evpipe_stage (topic, payload) FROM STDIN (FORMAT binary)";
constexpr std::string_view move_stage_sql =
    "INSERT INTO {}events_mirror (topic, payload) SELECT topic, payload FROM pg_temp.evpipe_stage "
    "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING tenant_id, idempotency_key";
// With transport headers (docs/mqtt.md): only batches that carry some name
// the column, so a database migrated before it still takes every other batch.
constexpr std::string_view copy_mirror_headers_sql =
    "COPY {}events_mirror (topic, payload, headers) FROM STDIN (FORMAT binary)";
constexpr const char* copy_stage_headers_sql =
    "COPY pg_temp.evpipe_stage (topic, payload, headers) FROM STDIN (FORMAT binary)";
constexpr std::string_view move_stage_headers_sql =
    "INSERT INTO {}events_mirror (topic, payload, headers) SELECT topic, payload, headers FROM pg_temp.evpipe_stage "
    "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING tenant_id, idempotency_key";
// With tenants (docs/tenants.md): idempotency is scoped to the tenant, the
// unique index is on (tenant_id, idempotency_key) whether tenancy is on or not.
constexpr std::string_view copy_mirror_tenant_sql =
    "COPY {}events_mirror (topic, payload, headers, tenant_id) FROM STDIN (FORMAT binary)";
constexpr const char* copy_stage_tenant_sql =
    "COPY pg_temp.evpipe_stage (topic, payload, headers, tenant_id) FROM STDIN (FORMAT binary)";
constexpr std::string_view move_stage_tenant_sql =
    "INSERT INTO {}events_mirror (topic, payload, headers, tenant_id) "
    "SELECT topic, payload, headers, tenant_id FROM pg_temp.evpipe_stage "
    "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING tenant_id, idempotency_key";
// Sent as an unnamed statement (parsed again for each dead letter, which is
// cheap next to the row it writes; dead letters are the rare path).
constexpr std::string_view dlq_sql =
    "INSERT INTO {}dlq_events (original_topic, failure_reason, reason_code, payload, raw, event_digest) "
    "VALUES ($1, $2, $3, $4::jsonb, $5::bytea, $6::bytea) "
    "ON CONFLICT (original_topic, event_digest) DO NOTHING";
constexpr std::string_view dlq_headers_sql =
    "INSERT INTO {}dlq_events (original_topic, failure_reason, reason_code, payload, raw, event_digest, headers) "
    "VALUES ($1, $2, $3, $4::jsonb, $5::bytea, $6::bytea, $7::jsonb) "
    "ON CONFLICT (original_topic, event_digest) DO NOTHING";
constexpr std::string_view dlq_tenant_sql =
    "INSERT INTO {}dlq_events (original_topic, failure_reason, reason_code, payload, raw, event_digest, headers, "
    "tenant_id) VALUES ($1, $2, $3, $4::jsonb, $5::bytea, $6::bytea, $7::jsonb, $8) "
    "ON CONFLICT (original_topic, event_digest) DO NOTHING";
// Statements per pipeline sync: keeps both sides' socket buffers from filling
// while a blocking connection writes (libpq's documented deadlock risk).
constexpr size_t pipeline_chunk = 256;
// `evpipe dlq requeue` (docs/read.md): the dead letters whose events a
// transaction settles are deleted in that transaction.
constexpr std::string_view settle_requeued_sql = "DELETE FROM {}dlq_events WHERE id = ANY($1::bigint[])";

std::string with_schema(std::string_view sql, const std::string& schema) {
  std::string out(sql);
  for (size_t at; (at = out.find("{}")) != std::string::npos;) out.replace(at, 2, schema.empty() ? "" : schema + ".");
  return out;
}

}  // namespace

postgres_sink::postgres_sink(std::string dsn, std::string application_name, const std::string& schema)
    : dsn_(std::move(dsn)),
      application_name_(std::move(application_name)),
      copy_mirror_sql_(with_schema(copy_mirror_sql, schema)),
      move_stage_sql_(with_schema(move_stage_sql, schema)),
      dlq_sql_(with_schema(dlq_sql, schema)),
      settle_requeued_sql_(with_schema(settle_requeued_sql, schema)),
      copy_mirror_headers_sql_(with_schema(copy_mirror_headers_sql, schema)),
      move_stage_headers_sql_(with_schema(move_stage_headers_sql, schema)),
      dlq_headers_sql_(with_schema(dlq_headers_sql, schema)),
      copy_mirror_tenant_sql_(with_schema(copy_mirror_tenant_sql, schema)),
      move_stage_tenant_sql_(with_schema(move_stage_tenant_sql, schema)),
      dlq_tenant_sql_(with_schema(dlq_tenant_sql, schema)),
      schema_(schema) {
  copy_keys_sql_ = with_schema("COPY {}evpipe_mirror_keys (tenant_id, idempotency_key) FROM STDIN (FORMAT binary)", schema);
  begin_copy_keys_sql_ = "BEGIN; " + copy_keys_sql_;
  move_keyed_sql_ = with_schema(partition_sql::keyed_move_sql("topic, payload"), schema);
  move_keyed_headers_sql_ = with_schema(partition_sql::keyed_move_sql("topic, payload, headers"), schema);
  move_keyed_tenant_sql_ = with_schema(partition_sql::keyed_move_sql("topic, payload, headers, tenant_id"), schema);
  dlq_keyed_sql_ = with_schema(partition_sql::keyed_dlq_sql(false, false), schema);
  dlq_keyed_headers_sql_ = with_schema(partition_sql::keyed_dlq_sql(true, false), schema);
  dlq_keyed_tenant_sql_ = with_schema(partition_sql::keyed_dlq_sql(true, true), schema);
  settle_requeued_keyed_sql_ = with_schema(partition_sql::settle_requeued_keyed_sql, schema);
  // The routes at start: their writer is ready (and inspected by connect()).
  if (auto routes = stages::route::active_routes()) {
    known_tables_[0].writer = std::make_unique<table_writer>(*routes, schema_);
    known_tables_[0].routes = std::move(routes);
  }
}

pg_status postgres_sink::use_routes(const stages::write_batch& batch) {
  const auto& want = batch.routes();
  tables_ = nullptr;
  if (!want) return {};
  if (known_tables_[1].routes == want) std::swap(known_tables_[0], known_tables_[1]);
  if (known_tables_[0].routes != want) {
    // Routes a reload published (app/reload.cc checked their tables first).
    std::swap(known_tables_[0], known_tables_[1]);
    known_tables_[0].writer = std::make_unique<table_writer>(*want, schema_);
    known_tables_[0].routes = want;
    known_tables_[0].inspected = false;
  }
  auto& known = known_tables_[0];
  if (!known.inspected) {
    if (pg_status st = known.writer->inspect(conn_); !st.ok) return st;
    known.inspected = true;
  }
  tables_ = known.writer.get();
  return {};
}

bool postgres_sink::connect() {
  pg_status st = conn_.connect(dsn_, application_name_);
  // Which routed tables settle redeliveries with their own unique index
  // (table_writer::inspect): looked up again on every connection, as an
  // index may have come or gone in between.
  for (auto& known : known_tables_) known.inspected = false;
  if (st.ok) {
    // Partitioned tables keep their keys in key tables (docs/partitions.md).
    const std::string prefix = schema_.empty() ? "" : schema_ + ".";
    const std::string mirror = prefix + "events_mirror", dlq = prefix + "dlq_events";
    const char* params[2] = {mirror.c_str(), dlq.c_str()};
    pg_result r;
    st = conn_.query_params(
        "SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)), false), "
        "coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($2)), false)",
        2, params, r);
    if (st.ok) {
      keyed_mirror_ = PQgetvalue(r.get(), 0, 0)[0] == 't';
      keyed_dlq_ = PQgetvalue(r.get(), 0, 1)[0] == 't';
    }
  }
  if (st.ok && known_tables_[0].writer) {
    st = known_tables_[0].writer->inspect(conn_);
    known_tables_[0].inspected = st.ok;
  }
  if (!st.ok) {
    last_error_ = st.message;
    conn_.close();
    return false;
  }
  return true;
}

bool postgres_sink::check() {
  if (!conn_.connected()) return connect();
  pg_status st = conn_.exec("SELECT 1");
  if (!st.ok) {
    last_error_ = st.message;
    conn_.close();
  }
  return st.ok;
}

pipeline::write_status postgres_sink::fail(const pg_status& st) {
  last_error_ = st.sqlstate.empty() ? st.message : st.sqlstate + " " + st.message;
  if (st.connection_lost || !conn_.connected()) {
    conn_.close();
  } else {
    (void)conn_.exec("ROLLBACK");  // leave no aborted transaction behind
  }
  return pipeline::write_status::retry;
}

pipeline::write_status postgres_sink::write(stages::write_batch& batch) {
  const bool requeued = has_requeued(batch);
  if (batch.row_count() == 0 && batch.routed_row_count() == 0 && batch.dead_letters().empty() && !requeued) {
    return pipeline::write_status::committed;  // only duplicates and blank lines
  }
  if (!conn_.connected() && !connect()) return pipeline::write_status::retry;
  if (pg_status st = use_routes(batch); !st.ok) return fail(st);

  // Rows of bare messages (identity_row_count) need evpipe_route_keys, and
  // requeued dead letters their DELETE: both in the transaction below.
  const bool mirror_only = batch.dead_letters().empty() && batch.routed_row_count() == 0 &&
                           batch.identity_row_count() == 0 && !requeued;
  // A partitioned events_mirror takes its keys by a second COPY in the same
  // transaction (write_transaction), so it has no single-COPY path.
  if (mirror_only && !keyed_mirror_) {
    // A lone COPY commits itself: the time from its data sent to its answer
    // is the commit's (stages/timeline.h).
    auto& tl = batch.timeline();
    tl.stamp(stages::step::copy_start);
    int64_t sent = 0;
    pg_status st = conn_.copy_in(copy_mirror_sql_of(batch), batch.copy_data(), &sent);
    tl.stamp(stages::step::copy_end, sent);
    tl.stamp(stages::step::commit_sent, sent);
    if (st.ok) return pipeline::write_status::committed;
    if (is_data_error(st)) return isolate_refused_rows(batch);
    if (classify(st) != pg_failure::duplicate_key) return fail(st);
    // Some key is already in the table: fall through to the resolving path.
  }
  const bool resolve = mirror_only && !keyed_mirror_;  // its COPY met a key the table holds
  pg_status st = write_transaction(batch, resolve);
  if (!resolve && classify(st) == pg_failure::duplicate_key) {
    st = write_transaction(batch, true);
    if (is_refusal(st)) return isolate_refused_rows(batch);
  }
  if (is_data_error(st)) return isolate_refused_rows(batch);
  if (!st.ok) return fail(st);
  return pipeline::write_status::committed;
}

pg_status postgres_sink::write_transaction(stages::write_batch& batch, bool resolve) {
  // Keys first (routed rows, and events_mirror rows of bare messages): an
  // event found stored before is marked duplicate and left out of the rest.
  const bool keyed = tables_ && (batch.routed_row_count() > 0 || batch.identity_row_count() > 0);
  // A partitioned events_mirror's batch opens with its keys' COPY: BEGIN goes
  // in the same query, one round trip less per batch (copy_mirror_keys).
  const bool begin_with_keys = keyed_mirror_ && !resolve && !keyed && batch.row_count() > 0;
  pg_status st = begin_with_keys ? pg_status{} : conn_.exec("BEGIN");
  if (st.ok && keyed) st = tables_->claim_keys(conn_, batch, 0, SIZE_MAX, /*tolerate_conflicts=*/resolve);
  if (st.ok && batch.row_count() > 0) {
    batch.timeline().stamp(stages::step::copy_start);
    std::string_view data = batch.copy_data();
    const auto& rows = batch.rows();
    const auto& outcomes = batch.outcomes();
    if (std::any_of(rows.begin(), rows.end(),
                    [&](const auto& r) { return outcomes[r.outcome_index].kind != stages::outcome_kind::mirrored; })) {
      batch.copy_stored_slice(0, rows.size(), stored_slice_);
      data = stored_slice_;
    }
    if (resolve) {
      st = resolve_conflicts(batch, 0, batch.row_count(), data);
    } else {
      // A key evpipe_mirror_keys holds fails this COPY with 23505, like the
      // unique index of a plain table: the caller then resolves.
      if (keyed_mirror_) st = copy_mirror_keys(batch, begin_with_keys);
      if (st.ok) st = conn_.copy_in(copy_mirror_sql_of(batch), data);
    }
    batch.timeline().stamp(stages::step::copy_end);  // in a transaction: once the server has taken the rows
  }
  if (st.ok && tables_ && batch.routed_row_count() > 0) {
    st = tables_->write(conn_, batch, 0, SIZE_MAX, /*tolerate_conflicts=*/resolve);
  }
  // Requeued dead letters: deleted before their new dead letters (if any) are
  // inserted, as (topic, digest) may be the same.
  if (st.ok) st = settle_requeued(batch, [](uint32_t) { return true; });
  if (!st.ok) {
    if (!st.connection_lost) (void)conn_.exec("ROLLBACK");
    return st;
  }
  if (batch.dead_letters().empty()) {
    batch.timeline().stamp(stages::step::commit_sent);
    st = conn_.exec("COMMIT");
  } else {
    st = insert_dead_letters(batch);  // ends with COMMIT (and stamps it)
  }
  if (st.ok && tables_ && batch.routed_row_count() > 0) tables_->committed();
  return st;
}

pg_status postgres_sink::resolve_conflicts(stages::write_batch& batch, size_t first, size_t last,
                                           std::string_view copy_data) {
  // Called inside a transaction, once per transaction.
  pg_status st = conn_.exec(create_stage_sql);
  const bool tenant = batch.has_tenant(), headers = batch.has_headers();
  if (st.ok) {
    st = conn_.copy_in(tenant ? copy_stage_tenant_sql : headers ? copy_stage_headers_sql : copy_stage_sql, copy_data);
  }
  if (!st.ok) return st;
  pg_result r;
  if (keyed_mirror_) {
    st = conn_.query(tenant    ? move_keyed_tenant_sql_.c_str()
                     : headers ? move_keyed_headers_sql_.c_str()
                               : move_keyed_sql_.c_str(),
                     r);
  } else {
    st = conn_.query(tenant    ? move_stage_tenant_sql_.c_str()
                     : headers ? move_stage_headers_sql_.c_str()
                               : move_stage_sql_.c_str(),
                     r);
  }
  if (!st.ok) return st;
  // The rows that went in, by (tenant, key); a key twice in one batch
  // (possible only when the dedup window is tiny) goes in once.
  auto tenant_key = [](std::string_view t, std::string_view k) {
    std::string out(t);
    out.push_back('\0');  // a tenant name holds no NUL
    out.append(k);
    return out;
  };
  absl::flat_hash_map<std::string, int> inserted;
  for (int i = 0, n = PQntuples(r.get()); i < n; ++i) {
    ++inserted[tenant_key(std::string_view(PQgetvalue(r.get(), i, 0), PQgetlength(r.get(), i, 0)),
                          std::string_view(PQgetvalue(r.get(), i, 1), PQgetlength(r.get(), i, 1)))];
  }
  const auto& rows = batch.rows();
  for (size_t i = first; i < last; ++i) {
    // Not sent (settled already), or a bare message's row, whose
    // idempotency_key column is NULL: evpipe_route_keys settled it.
    if (batch.outcomes()[rows[i].outcome_index].kind != stages::outcome_kind::mirrored) continue;
    if (rows[i].identity_key) continue;
    auto it = inserted.find(tenant_key(batch.text(rows[i].tenant), batch.text(rows[i].key)));
    if (it != inserted.end() && it->second > 0) {
      --it->second;
    } else {
      batch.mark_row_duplicate(i);
    }
  }
  return {};
}

pg_status postgres_sink::settle_requeued(stages::write_batch& batch, const std::function<bool(uint32_t)>& settles) {
  if (!has_requeued(batch)) return {};
  std::string ids = "{";
  const auto& origins = batch.origins();
  const auto& outcomes = batch.outcomes();
  for (uint32_t i = 0; i < outcomes.size(); ++i) {
    const auto& p = outcomes[i];
    if (!origins[p.origin]->requeued_dead_letters() || !settles(i)) continue;
    if (ids.size() > 1) ids += ',';
    ids += std::to_string(p.seq);
  }
  if (ids.size() == 1) return {};
  ids += '}';
  const char* params[1] = {ids.c_str()};
  pg_result r;
  return conn_.query_params((keyed_dlq_ ? settle_requeued_keyed_sql_ : settle_requeued_sql_).c_str(), 1, params, r);
}

pg_status postgres_sink::copy_mirror_keys(stages::write_batch& batch, bool begin) {
  // (tenant_id, idempotency_key) of each row to store, as two binary text
  // fields; bare messages' rows have no key here (evpipe_route_keys).
  keys_copy_.assign(stages::copy_format::header);
  const auto& rows = batch.rows();
  auto put_field = [&](std::string_view v) {
    const auto n = static_cast<uint32_t>(v.size());
    const char len[4] = {char(n >> 24), char(n >> 16), char(n >> 8), char(n)};
    keys_copy_.append(len, 4);
    keys_copy_.append(v);
  };
  size_t keys = 0;
  for (const auto& row : rows) {
    if (row.identity_key || batch.outcomes()[row.outcome_index].kind != stages::outcome_kind::mirrored) continue;
    keys_copy_.append("\0\2", 2);
    put_field(batch.text(row.tenant));
    put_field(batch.text(row.key));
    ++keys;
  }
  if (keys == 0) return begin ? conn_.exec("BEGIN") : pg_status{};
  keys_copy_.append(stages::copy_format::trailer);
  return conn_.copy_in(begin ? begin_copy_keys_sql_.c_str() : copy_keys_sql_.c_str(), keys_copy_);
}

pg_status postgres_sink::insert_dead_letters(stages::write_batch& batch) {
  PGconn* c = conn_.raw();
  if (PQenterPipelineMode(c) != 1) return conn_.error_of(nullptr);
  auto& letters = batch.dead_letters();
  pg_status st;
  size_t sent = 0;
  bool commit_sent = false;
  while (st.ok && !commit_sent) {
    // Send one chunk, then read its results.
    const size_t chunk_first = sent;
    size_t queued = 0;
    for (; sent < letters.size() && queued < pipeline_chunk; ++sent, ++queued) {
      const auto& dl = letters[sent];
      std::string_view code = stages::reason_code(dl.why);
      std::string code_text(code);
      const bool with_tenant = !dl.tenant.empty();
      const char* values[8] = {dl.topic.c_str(), dl.message.c_str(), code_text.c_str(),
                               dl.bytes_are_json ? dl.bytes.c_str() : nullptr,
                               dl.bytes_are_json ? nullptr : dl.bytes.data(), dl.digest.data(),
                               dl.headers.empty() && with_tenant ? nullptr : dl.headers.c_str(), dl.tenant.c_str()};
      int lengths[8] = {0, 0, 0, static_cast<int>(dl.bytes.size()), static_cast<int>(dl.bytes.size()),
                        static_cast<int>(dl.digest.size()), 0, 0};
      int formats[8] = {0, 0, 0, 0, 1, 1, 0, 0};
      // Only a dead letter with headers (or a tenant) names the column (as the COPY does).
      const bool with_headers = !dl.headers.empty();
      const char* sql = keyed_dlq_ ? (with_tenant    ? dlq_keyed_tenant_sql_.c_str()
                                      : with_headers ? dlq_keyed_headers_sql_.c_str()
                                                     : dlq_keyed_sql_.c_str())
                        : with_tenant  ? dlq_tenant_sql_.c_str()
                        : with_headers ? dlq_headers_sql_.c_str()
                                       : dlq_sql_.c_str();
      if (PQsendQueryParams(c, sql, with_tenant ? 8 : with_headers ? 7 : 6, nullptr, values, lengths, formats, 0) != 1) {
        st = conn_.error_of(nullptr);
        break;
      }
    }
    if (st.ok && sent == letters.size()) {
      if (PQsendQueryParams(c, "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 0) != 1) {
        st = conn_.error_of(nullptr);
      } else {
        commit_sent = true;
        ++queued;
      }
    }
    if (!st.ok) break;
    if (commit_sent) batch.timeline().stamp(stages::step::commit_sent);
    if (PQpipelineSync(c) != 1) {
      st = conn_.error_of(nullptr);
      break;
    }
    // Each statement yields one result then a null; the sync yields PIPELINE_SYNC.
    for (size_t i = 0; i < queued; ++i) {
      pg_result r(PQgetResult(c));
      if (!r) {
        if (st.ok) st = conn_.error_of(nullptr);
        break;
      }
      auto s = PQresultStatus(r.get());
      if (s != PGRES_COMMAND_OK && st.ok) st = conn_.error_of(r.get());
      if (s == PGRES_COMMAND_OK && chunk_first + i < sent) {
        // "INSERT 0 1", or "INSERT 0 0" when ON CONFLICT found the row stored
        // before (a resent bad event). Set on every attempt: a retried batch
        // reads the answer of the transaction that commits.
        letters[chunk_first + i].already_stored = std::string_view(PQcmdTuples(r.get())) == "0";
      }
      pg_result end(PQgetResult(c));  // null terminator of this statement
    }
    for (;;) {
      pg_result r(PQgetResult(c));
      if (!r) {
        if (!conn_.connected()) break;
        continue;
      }
      if (PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC) break;
    }
    if (!conn_.connected()) {
      if (st.ok) st = conn_.error_of(nullptr);
      break;
    }
  }
  if (conn_.connected()) PQexitPipelineMode(c);
  if (!st.ok && !st.connection_lost && conn_.connected()) (void)conn_.exec("ROLLBACK");
  return st;
}

}  // namespace evpipe::io
