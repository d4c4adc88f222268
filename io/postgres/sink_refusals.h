#pragma once
// What postgres_sink's write path (postgres_sink.cc) and its isolation of
// refused rows (postgres_sink_isolate.cc) share: how a failure is judged, and
// the bisection that finds the rows PostgreSQL refuses.

#include <algorithm>
#include <utility>
#include <vector>

#include "io/postgres/pg_connection.h"
#include "stages/batch.h"

namespace evpipe::io::sink_refusals {

// Whether the batch holds requeued dead letters (their seq is a dlq_events id).
inline bool has_requeued(const stages::write_batch& batch) {
  return std::any_of(batch.origins().begin(), batch.origins().end(),
                     [](const auto& o) { return o && o->requeued_dead_letters(); });
}

inline bool is_data_error(const pg_status& st) { return classify(st) == pg_failure::data; }
// Where evpipe's own keys tolerate conflicts (the resolving paths), a unique
// violation can only come from a routed table's own unique index: the row's
// data is refused, like a CHECK constraint's.
inline bool is_refusal(const pg_status& st) {
  auto f = classify(st);
  return f == pg_failure::data || f == pg_failure::duplicate_key;
}

// Bisection over units [0, n) of a batch PostgreSQL refused: attempt(first,
// last) writes the units of a range in a transaction of its own (BEGIN to
// COMMIT). A range that commits is done; a range whose failure `refused`
// accepts is rolled back and split until single units remain, which go to
// on_refused(unit, why). k bad units in n cost about 2k·log2(n) transactions.
// Any other failure ends it and is returned (rolled back unless the
// connection is gone).
template <typename Attempt, typename Refused, typename OnRefused>
pg_status bisect(pg_connection& conn, size_t n, Attempt&& attempt, Refused&& refused, OnRefused&& on_refused) {
  std::vector<std::pair<size_t, size_t>> todo{{0, n}};
  while (!todo.empty()) {
    const auto [first, last] = todo.back();
    todo.pop_back();
    if (first == last) continue;
    pg_status st = attempt(first, last);
    if (st.ok) continue;
    if (!st.connection_lost) (void)conn.exec("ROLLBACK");
    if (!refused(st)) return st;
    if (last - first == 1) {
      on_refused(first, st);
      continue;
    }
    const size_t mid = first + (last - first) / 2;
    todo.emplace_back(mid, last);
    todo.emplace_back(first, mid);  // the first half is tried first
  }
  return {};
}

}  // namespace evpipe::io::sink_refusals
