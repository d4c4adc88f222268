// `evpipe dlq requeue`: dead letters back through validation, dedup and the
// write, in this process (docs/read.md, "Requeue").
//
// The selected rows are read in id order, in pages, and fed to an intake and
// shards of their own, exactly as a source feeds the daemon's: each event's
// seq is its dlq_events id and its origin says so (requeued_dead_letters()),
// so postgres_sink deletes the old row in the transaction that commits the
// event's new outcome (a row in events_mirror, a duplicate of a stored key, or
// a new dead letter). Killed at any point, a requeue leaves every dead letter
// either settled (new outcome and old row gone, together) or untouched.

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include <simdjson.h>

#include "io/postgres/pg_connection.h"
#include "io/postgres/postgres_sink.h"
#include "pipeline/shard_settings.h"
#include "pipeline/intake.h"
#include "pipeline/metrics.h"
#include "pipeline/router.h"
#include "read/dlq/dlq_commands.h"
#include "read/dlq/dlq_select.h"
#include "stages/route/active.h"
#include "stages/tenant/binding.h"

namespace evpipe::read {

namespace {

using clock_type = std::chrono::steady_clock;

std::atomic<int> interrupted{0};
extern "C" void on_requeue_interrupt(int sig) { interrupted.store(sig); }

// Rows per page read from dlq_events.
constexpr int page_rows = 1000;
// Events read but not yet settled, at most: bounds memory whatever the selection.
constexpr uint64_t max_unsettled = 50'000;

// Where the requeued events' outcomes arrive (from the shard threads, after
// each commit). Shared by every batch of the run.
class requeue_origin final : public stages::event_origin {
 public:
  void on_outcomes(std::span<const stages::outcome> outcomes) override {
    std::lock_guard lock(mu_);
    for (const auto& o : outcomes) {
      switch (o.kind) {
        case stages::outcome_kind::mirrored: ++mirrored_; break;
        case stages::outcome_kind::duplicate: ++duplicates_; break;
        case stages::outcome_kind::skipped: ++skipped_; break;
        case stages::outcome_kind::dead_lettered: ++again_[std::string(stages::reason_code(o.why))]; break;
      }
    }
    settled_.fetch_add(outcomes.size(), std::memory_order_relaxed);
  }
  [[nodiscard]] bool requeued_dead_letters() const noexcept override { return true; }

  [[nodiscard]] uint64_t settled() const noexcept { return settled_.load(std::memory_order_relaxed); }
  struct summary {
    uint64_t mirrored = 0, duplicates = 0, skipped = 0, again = 0;
    std::map<std::string, uint64_t> again_by_reason;
  };
  [[nodiscard]] summary read() const {
    std::lock_guard lock(mu_);
    summary s{mirrored_, duplicates_, skipped_, 0, again_};
    for (const auto& [r, n] : again_) s.again += n;
    return s;
  }

 private:
  mutable std::mutex mu_;
  uint64_t mirrored_ = 0, duplicates_ = 0, skipped_ = 0;
  std::map<std::string, uint64_t> again_;
  std::atomic<uint64_t> settled_{0};
};

std::string reasons_text(const std::map<std::string, uint64_t>& by_reason) {
  std::string out;
  for (const auto& [r, n] : by_reason) out += (out.empty() ? "" : ", ") + r + " " + std::to_string(n);
  return out;
}

uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// One page of dead letters, in binary (the raw bytes as they are); the
// event's bytes are its payload's JSON text when it has one, else raw.
struct dead_letter_row {
  int64_t id = 0;
  std::string_view topic, bytes;
  std::string_view headers;  // the transport's headers (jsonb's text), "" for none: kept on the requeued event
  std::string_view tenant;   // tenant_id, "" for none: kept on the requeued event (docs/tenants.md)
  bool tenant_mismatch = false;  // its reason: its claim was refused, so no claim may name its tenant now
};
io::pg_status read_page(io::pg_connection& conn, const std::string& sql, int64_t after, io::pg_result& r,
                        std::vector<dead_letter_row>& out) {
  out.clear();
  std::string after_text = std::to_string(after);
  const char* params[1] = {after_text.c_str()};
  r.reset(PQexecParams(conn.raw(), sql.c_str(), 1, nullptr, params, nullptr, nullptr, 1));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) return conn.error_of(r.get());
  for (int i = 0, n = PQntuples(r.get()); i < n; ++i) {
    dead_letter_row row;
    row.id = static_cast<int64_t>(get_u64(PQgetvalue(r.get(), i, 0)));
    row.topic = std::string_view(PQgetvalue(r.get(), i, 1), PQgetlength(r.get(), i, 1));
    if (!PQgetisnull(r.get(), i, 2)) {
      // jsonb's binary form: a version byte, then the text.
      row.bytes = std::string_view(PQgetvalue(r.get(), i, 2) + 1, PQgetlength(r.get(), i, 2) - 1);
    } else if (!PQgetisnull(r.get(), i, 3)) {
      row.bytes = std::string_view(PQgetvalue(r.get(), i, 3), PQgetlength(r.get(), i, 3));
    }
    if (!PQgetisnull(r.get(), i, 4) && PQgetlength(r.get(), i, 4) > 1) {
      row.headers = std::string_view(PQgetvalue(r.get(), i, 4) + 1, PQgetlength(r.get(), i, 4) - 1);
    }
    if (!PQgetisnull(r.get(), i, 5)) row.tenant = std::string_view(PQgetvalue(r.get(), i, 5), PQgetlength(r.get(), i, 5));
    row.tenant_mismatch = !PQgetisnull(r.get(), i, 6) && PQgetvalue(r.get(), i, 6)[0] != 0;
    out.push_back(row);
  }
  return {};
}

void print_progress(uint64_t settled, uint64_t total, double seconds, const requeue_origin::summary& s) {
  double rate = seconds > 0 ? static_cast<double>(settled) / seconds : 0;
  std::string eta = rate > 0 && total > settled
                        ? ", ETA " + std::to_string(static_cast<long long>(static_cast<double>(total - settled) / rate)) + " s"
                        : "";
  std::fprintf(stderr, "requeue: %llu of %llu dead letters, %.0f/s%s: %llu mirrored, %llu already stored, %llu dead-lettered again\n",
               static_cast<unsigned long long>(settled), static_cast<unsigned long long>(total), rate, eta.c_str(),
               static_cast<unsigned long long>(s.mirrored), static_cast<unsigned long long>(s.duplicates),
               static_cast<unsigned long long>(s.again));
}

}  // namespace

int run_dlq_requeue(const config::settings& s, const dlq_options& o) {
  dlq_session db;
  std::string where;
  if (int rc = prepare_dlq(s, o, db, where)) return rc;

  // What is selected: counted by reason, and bounded by the newest id now,
  // so that dead letters written during the requeue (its own among them)
  // are not read again.
  io::pg_result r;
  std::string count_sql = "SELECT COALESCE(reason_code, ''), count(*), max(id) FROM " + db.table + " WHERE " + where +
                          " GROUP BY 1 ORDER BY 1";
  if (auto st = db.conn.query(count_sql.c_str(), r); !st.ok) return report_dlq_failure(st);
  uint64_t total = 0, truncated = 0;
  long long max_id = 0;
  std::map<std::string, uint64_t> selected;
  for (int i = 0, n = PQntuples(r.get()); i < n; ++i) {
    std::string reason = PQgetvalue(r.get(), i, 0);
    uint64_t count = std::strtoull(PQgetvalue(r.get(), i, 1), nullptr, 10);
    // too_large: raw holds only the first bytes, and the rest is gone; sent
    // again, the prefix would replace the only record of the event.
    if (reason == "too_large") {
      truncated = count;
      continue;
    }
    selected[reason] = count;
    total += count;
    max_id = std::max(max_id, std::atoll(PQgetvalue(r.get(), i, 2)));
  }
  if (truncated) {
    std::fprintf(stderr, "evpipe dlq: %llu too_large dead letters left alone: only their first bytes are stored\n",
                 static_cast<unsigned long long>(truncated));
  }
  if (total == 0) {
    std::printf("no dead letters match: nothing to requeue\n");
    return 0;
  }
  const std::string page_sql = "SELECT id, original_topic, payload, raw, " + db.headers_column() + ", " + db.tenant_column() +
                               ", reason_code = 'tenant_mismatch' FROM " + db.table + " WHERE " + where + " AND reason_code IS DISTINCT FROM 'too_large' AND id > $1::bigint AND id <= " +
                               std::to_string(max_id) + " ORDER BY id LIMIT " + std::to_string(page_rows);

  // Routes apply as in the daemon: a requeued event goes where a new one would.
  try {
    stages::route::set_active_routes(std::make_shared<const stages::route::route_set>(s.routes));
  } catch (const config::config_error& e) {
    std::fprintf(stderr, "evpipe dlq: config error: %s\n", e.what());
    return 2;
  }
  stages::envelope_limits limits;
  // The events were stored whole, under the limit when they came in; their
  // JSON text as jsonb prints it can be longer than what was sent, and a
  // too_large verdict would keep only a prefix. So no size limit here.
  limits.max_event_bytes = size_t{1} << 30;
  limits.max_key_bytes = s.events.max_key_bytes;
  limits.max_depth = s.events.max_depth;
  auto& validator = pipeline::thread_validator(limits);

  // Tenants (docs/tenants.md): a dead letter's tenant_id is the tenant its
  // source's credentials gave it (or its claim's), so it is the requeued
  // event's credential: the event keeps its tenant, its key is deduplicated
  // within that tenant, and a claim of another tenant is tenant_mismatch
  // again. With [tenants] off, only dead letters that have a tenant get one.
  auto tenancy = std::make_shared<const stages::tenant::binding>(config::source_tenancy{}, s.tenants.field);
  // A tenant_mismatch without a tenant (its source allowed only some tenants,
  // and not the one it claimed): requeued, it may still name none, so the
  // source's refusal is not undone by a requeue.
  config::source_tenancy none_allowed;
  none_allowed.allowed_tenants = {""};
  auto no_claim = std::make_shared<const stages::tenant::binding>(none_allowed, s.tenants.field);
  auto tenancy_of = [&](const dead_letter_row& row) -> std::shared_ptr<const stages::tenant::binding> {
    if (row.tenant.empty() && row.tenant_mismatch) return no_claim;
    return s.tenants.enabled || !row.tenant.empty() ? tenancy : nullptr;
  };
  if (o.dry_run) {
    // Validation only: what would pass now, and what would be refused again.
    pipeline::intake check(1, limits);
    std::map<std::string, uint64_t> still_invalid;
    uint64_t valid = 0;
    std::vector<dead_letter_row> page;
    std::string padded;
    int64_t after = 0;
    for (;;) {
      io::pg_result pr;
      if (auto st = read_page(db.conn, page_sql, after, pr, page); !st.ok) return report_dlq_failure(st);
      if (page.empty()) break;
      for (const auto& row : page) {
        padded.assign(row.bytes);
        padded.append(simdjson::SIMDJSON_PADDING, '\0');
        check.set_tenancy(tenancy_of(row));
        check.set_credential(row.tenant);
        check.add(std::string_view(padded.data(), row.bytes.size()), padded.size(), static_cast<uint64_t>(row.id), 0,
                  row.topic, validator, pipeline::topic_rule::source_only);
        after = row.id;
      }
      for (const auto& ev : check.batches()[0].events) {
        if (ev.why == stages::reason::none) {
          ++valid;
        } else {
          ++still_invalid[std::string(stages::reason_code(ev.why))];
        }
      }
      check.batches()[0].clear();
      check.submitted();
    }
    std::printf("would requeue %llu dead letters (%s): %llu pass validation now, %llu would be dead-lettered again%s%s%s\n",
                static_cast<unsigned long long>(total), reasons_text(selected).c_str(),
                static_cast<unsigned long long>(valid), static_cast<unsigned long long>(total - valid),
                still_invalid.empty() ? "" : " (", reasons_text(still_invalid).c_str(), still_invalid.empty() ? "" : ")");
    return 0;
  }

  // The pipeline of this process: shards with their own connections.
  pipeline::metrics_registry registry(s.metrics.prefix, s.metrics.max_label_values, s.metrics.max_series);
  const uint32_t nshards = s.effective_shards();
  pipeline::shard_options opts = pipeline::shard_options_from(s);
  std::vector<std::unique_ptr<pipeline::shard>> shards;
  for (uint32_t i = 0; i < nshards; ++i) {
    auto sink = std::make_unique<io::postgres_sink>(s.postgres.dsn, "evpipe-requeue-" + std::to_string(i),
                                                     s.postgres.schema);
    if (!sink->connect()) {
      std::fprintf(stderr, "evpipe dlq: cannot connect to PostgreSQL: %s\n", sink->last_error().c_str());
      return 1;
    }
    shards.push_back(std::make_unique<pipeline::shard>(i, opts, std::move(sink), registry.add_shard(), registry));
  }
  pipeline::router router(std::move(shards), s.pipeline.queue_capacity);
  pipeline::intake in(nshards, limits);
  auto origin = std::make_shared<requeue_origin>();

  struct sigaction sa {};
  sa.sa_handler = on_requeue_interrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  router.start();
  const auto t0 = clock_type::now();
  auto next_progress = t0 + std::chrono::seconds(1);
  auto progress = [&] {
    auto now = clock_type::now();
    if (now < next_progress) return;
    print_progress(origin->settled(), total, std::chrono::duration<double>(now - t0).count(), origin->read());
    next_progress = now + std::chrono::seconds(1);
  };
  uint64_t sent = 0;
  int64_t after = 0;
  io::pg_status read_status;
  std::vector<dead_letter_row> page;
  std::string padded;
  while (!interrupted.load()) {
    io::pg_result pr;
    read_status = read_page(db.conn, page_sql, after, pr, page);
    if (!read_status.ok || page.empty()) break;
    for (const auto& row : page) {
      padded.assign(row.bytes);
      padded.append(simdjson::SIMDJSON_PADDING, '\0');
      in.set_tenancy(tenancy_of(row));
      in.set_credential(row.tenant);
      in.add(std::string_view(padded.data(), row.bytes.size()), padded.size(), static_cast<uint64_t>(row.id),
             pipeline::steady_now_ns(), row.topic, validator, pipeline::topic_rule::source_only, row.headers);
      after = row.id;
    }
    for (auto& b : in.batches()) {
      if (!b.events.empty()) b.origin = origin;
    }
    sent += in.pending();
    // Backpressure as a source has it: wait while the shards are full or
    // too much is unsettled.
    while (!interrupted.load() && (!router.has_room() || sent - origin->settled() > max_unsettled)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      progress();
    }
    router.submit(in.batches());
    in.submitted();
    progress();
  }
  // Drain: everything handed over is committed (or, if the database stays
  // away past the deadline, left in dlq_events as it was).
  while (origin->settled() < sent && !interrupted.load() && clock_type::now() < t0 + std::chrono::hours(24)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    progress();
  }
  router.stop(clock_type::now() + std::chrono::seconds(30));

  auto sum = origin->read();
  const uint64_t settled = origin->settled();
  std::printf("requeued %llu of %llu dead letters: %llu mirrored, %llu already stored, %llu dead-lettered again%s%s%s\n",
              static_cast<unsigned long long>(settled), static_cast<unsigned long long>(total),
              static_cast<unsigned long long>(sum.mirrored), static_cast<unsigned long long>(sum.duplicates + sum.skipped),
              static_cast<unsigned long long>(sum.again), sum.again ? " (" : "", reasons_text(sum.again_by_reason).c_str(),
              sum.again ? ")" : "");
  std::fflush(stdout);
  if (!read_status.ok) {
    std::fprintf(stderr, "evpipe dlq: reading dlq_events failed: %s\n", read_status.message.c_str());
    return 1;
  }
  if (settled < sent) {
    std::fprintf(stderr, "evpipe dlq: %llu dead letters not settled (left in dlq_events as they were); run requeue again\n",
                 static_cast<unsigned long long>(sent - settled));
    return 1;
  }
  if (interrupted.load()) {
    std::fprintf(stderr, "evpipe dlq: interrupted; the rest is still in dlq_events (run requeue again)\n");
    return 130;
  }
  return 0;
}

}  // namespace evpipe::read
