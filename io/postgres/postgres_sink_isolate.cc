// Per-row error isolation: when PostgreSQL refuses a batch for some of its
// rows' data, postgres_sink finds those rows by bisection, commits the rest
// and dead-letters them (docs/reliability.md). Part of postgres_sink
// (postgres_sink.h); the write path is postgres_sink.cc.
#include "io/postgres/postgres_sink.h"

#include <algorithm>

#include "io/postgres/sink_refusals.h"

namespace evpipe::io {

using namespace sink_refusals;

pipeline::write_status postgres_sink::isolate_refused_rows(stages::write_batch& batch) {
  if ((batch.routed_row_count() > 0 || batch.identity_row_count() > 0) && tables_) {
    return isolate_refused_events(batch);
  }
  // Bisection by rows. If the connection drops midway, the whole write is
  // retried: rows already committed here then come back as duplicates of
  // themselves, which keeps exactly one row per key.
  std::string slice;
  struct refused {
    size_t row;
    pg_status why;
  };
  std::vector<refused> refused_rows;
  auto attempt = [&](size_t first, size_t last) {
    batch.copy_slice(first, last, slice);
    pg_status st = conn_.exec("BEGIN");
    if (st.ok) st = resolve_conflicts(batch, first, last, slice);
    if (st.ok) {
      st = settle_requeued(batch, [&](uint32_t o) {
        auto it = std::lower_bound(batch.rows().begin() + first, batch.rows().begin() + last, o,
                                   [](const auto& r, uint32_t v) { return r.outcome_index < v; });
        return it != batch.rows().begin() + last && it->outcome_index == o;
      });
    }
    if (st.ok) st = conn_.exec("COMMIT");
    return st;
  };
  if (pg_status st = bisect(conn_, batch.row_count(), attempt, is_data_error,
                            [&](size_t row, const pg_status& why) { refused_rows.push_back({row, why}); });
      !st.ok) {
    return fail(st);
  }
  for (auto& r : refused_rows) {
    // Class 23 (constraints) judged a stored jsonb value: the JSON itself is
    // fine. Otherwise keep the bytes, which PostgreSQL may not accept as jsonb.
    batch.reject_row(r.row, r.why.sqlstate, r.why.message, r.why.sqlstate.starts_with("23"));
  }
  return write_isolated_dead_letters(batch);
}

pipeline::write_status postgres_sink::isolate_refused_events(stages::write_batch& batch) {
  // The units are the events with rows (events_mirror, routed tables or
  // both), in arrival order; an event's rows commit or are refused together.
  std::vector<uint32_t> units;
  for (const auto& r : batch.rows()) units.push_back(r.outcome_index);
  for (const auto& r : batch.routed_rows()) units.push_back(r.outcome_index);
  std::sort(units.begin(), units.end());
  units.erase(std::unique(units.begin(), units.end()), units.end());
  const auto& rows = batch.rows();
  // The events_mirror rows of the events [first, last): contiguous, as both are in arrival order.
  auto mirror_range = [&](uint32_t first, uint32_t last) {
    auto lo = std::lower_bound(rows.begin(), rows.end(), first,
                               [](const auto& r, uint32_t v) { return r.outcome_index < v; });
    auto hi = std::lower_bound(rows.begin(), rows.end(), last,
                               [](const auto& r, uint32_t v) { return r.outcome_index < v; });
    return std::pair<size_t, size_t>(lo - rows.begin(), hi - rows.begin());
  };
  std::string slice;
  struct refused {
    uint32_t outcome;
    pg_status why;
  };
  std::vector<refused> refused_events;
  auto attempt = [&](size_t first, size_t last) {
    const uint32_t o_first = units[first], o_last = units[last - 1] + 1;
    auto [r_first, r_last] = mirror_range(o_first, o_last);
    pg_status st = conn_.exec("BEGIN");
    // Keys first: events found stored before are left out of the rest.
    if (st.ok) st = tables_->claim_keys(conn_, batch, o_first, o_last);
    if (st.ok && r_first < r_last) {
      batch.copy_stored_slice(r_first, r_last, slice);
      st = resolve_conflicts(batch, r_first, r_last, slice);
    }
    if (st.ok) st = tables_->write(conn_, batch, o_first, o_last);
    if (st.ok) {
      // Only the events this range holds rows of: the others' dead letters
      // are written in the last transaction below.
      st = settle_requeued(batch, [&](uint32_t o) {
        return std::binary_search(units.begin() + first, units.begin() + last, o);
      });
    }
    if (st.ok) st = conn_.exec("COMMIT");
    if (st.ok) tables_->committed();
    return st;
  };
  if (pg_status st = bisect(conn_, units.size(), attempt, is_refusal,
                            [&](size_t unit, const pg_status& why) { refused_events.push_back({units[unit], why}); });
      !st.ok) {
    return fail(st);
  }
  for (auto& r : refused_events) {
    auto [r_first, r_last] = mirror_range(r.outcome, r.outcome + 1);
    if (r_first < r_last) {
      batch.reject_row(r_first, r.why.sqlstate, r.why.message, r.why.sqlstate.starts_with("23"));
    } else {
      batch.reject_routed(r.outcome, r.why.sqlstate, r.why.message);
    }
  }
  return write_isolated_dead_letters(batch);
}

pipeline::write_status postgres_sink::write_isolated_dead_letters(stages::write_batch& batch) {
  if (batch.dead_letters().empty() && !has_requeued(batch)) return pipeline::write_status::committed;
  // Every requeued dead letter not settled by the isolation (rows refused
  // again, events invalid again, duplicates): its old row goes before its new
  // one comes.
  pg_status st = conn_.exec("BEGIN");
  if (st.ok) st = settle_requeued(batch, [](uint32_t) { return true; });
  if (st.ok) st = insert_dead_letters(batch);  // ends with COMMIT
  if (!st.ok) return fail(st);
  return pipeline::write_status::committed;
}

}  // namespace evpipe::io
