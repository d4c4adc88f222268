#pragma once
// What the floors in perf/ share: binary COPY of (topic, payload) rows into
// events_mirror, as evpipe writes them (stages/batch.cc), and the COPY itself.
// A COPY outside a transaction commits on its own when it ends.

#include <libpq-fe.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

namespace evpipe::perf {

inline void put_u16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}
inline void put_u32(std::string& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>(v >> s));
}

inline void copy_header(std::string& out) {
  out.append("PGCOPY\n\377\r\n\0", 11);
  put_u32(out, 0);  // flags
  put_u32(out, 0);  // header extension length
}

// One row: the field count and (length, bytes) of topic (varchar: its text)
// and payload (jsonb: version byte 1, then the JSON text).
inline void copy_row(std::string& out, std::string_view topic, std::string_view json) {
  put_u16(out, 2);
  put_u32(out, static_cast<uint32_t>(topic.size()));
  out.append(topic);
  put_u32(out, static_cast<uint32_t>(json.size() + 1));
  out.push_back('\1');
  out.append(json);
}

inline void copy_trailer(std::string& out) { put_u16(out, 0xffff); }

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
