#pragma once
// What the floors in perf/ share besides evpipe's own binary COPY framing
// (stages::copy_format, stages/batch.h, which they write their rows with):
// the topic of an event of evpipe-load's mix, and the COPY itself. A COPY
// outside a transaction commits on its own when it ends.

#include <libpq-fe.h>

#include <algorithm>
#include <string>
#include <string_view>

namespace evpipe::perf {

// The topic evpipe stores for an event of evpipe-load's mix: its own "topic"
// field (the generator always sets one; evpipe-load --emit-csv does the same
// for psql \copy), else `fallback`. A plain search, not a parse.
inline std::string_view topic_of(std::string_view event, std::string_view fallback) {
  constexpr std::string_view field = "\"topic\":\"";
  const auto p = event.find(field);
  if (p == std::string_view::npos) return fallback;
  const auto end = event.find('"', p + field.size());
  if (end == std::string_view::npos) return fallback;
  return event.substr(p + field.size(), end - p - field.size());
}

// COPY `data` (header, rows, trailer) with `sql` and let it commit; false
// and `why` on an error. Sent in slices of 1 MiB.
inline bool copy_commit(PGconn* conn, const std::string& sql, std::string_view data, std::string& why) {
  PGresult* r = PQexec(conn, sql.c_str());
  const bool in = PQresultStatus(r) == PGRES_COPY_IN;
  if (!in) why = PQresultErrorMessage(r);
  PQclear(r);
  if (!in) return false;
  constexpr size_t slice = 1 << 20;
  for (size_t off = 0; off < data.size(); off += slice) {
    const size_t n = std::min(slice, data.size() - off);
    if (PQputCopyData(conn, data.data() + off, static_cast<int>(n)) != 1) {
      why = PQerrorMessage(conn);
      return false;
    }
  }
  if (PQputCopyEnd(conn, nullptr) != 1) {
    why = PQerrorMessage(conn);
    return false;
  }
  bool ok = true;
  while (PGresult* res = PQgetResult(conn)) {
    if (PQresultStatus(res) != PGRES_COMMAND_OK && ok) {
      why = PQresultErrorMessage(res);
      ok = false;
    }
    PQclear(res);
  }
  return ok;
}

}  // namespace evpipe::perf
