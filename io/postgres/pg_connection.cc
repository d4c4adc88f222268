#include "io/postgres/pg_connection.h"

#include <cstdlib>

#include "stages/timeline.h"

namespace evpipe::io {

std::string sql_literal(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

namespace {
std::string one_line(const char* s) {
  std::string out = s ? s : "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  for (auto& c : out) {
    if (c == '\n') c = ' ';
  }
  return out;
}
void ignore_notice(void*, const char*) {}
}  // namespace

pg_failure classify(const pg_status& st) noexcept {
  if (st.ok) return pg_failure::none;
  if (st.connection_lost || st.sqlstate.size() != 5) return pg_failure::transient;
  if (st.sqlstate == "23505") return pg_failure::duplicate_key;
  std::string_view cls = std::string_view(st.sqlstate).substr(0, 2);
  if (cls == "22" || cls == "23" || cls == "54" || cls == "P0") return pg_failure::data;
  return pg_failure::transient;
}

pg_connection::~pg_connection() { close(); }

void pg_connection::close() {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
}

bool pg_connection::connected() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }

pg_status pg_connection::connect(const std::string& dsn, const std::string& application_name) {
  close();
  // The DSN is the user's: libpq processes the keywords in order and a later
  // one wins, so evpipe's defaults come first and the DSN (expanded from the
  // dbname slot) overrides them. application_name goes in as libpq's
  // fallback_application_name, which also yields to PGAPPNAME; the connect
  // timeout default is left out when PGCONNECT_TIMEOUT is set. An empty DSN
  // is an empty value, which libpq skips: its defaults and PG* environment.
  //
  // A server that vanishes without a word (a failed-over host, a network
  // partition) while a shard waits for its reply is noticed in about 25 s
  // (keepalive probes from 10 s of silence on, 3 of them 5 s apart) instead
  // of the kernel's 2 hours; then the shard connects again and retries
  // (docs/postgres.md, which says why tcp_user_timeout is left to the DSN).
  const char* keys[8] = {"fallback_application_name", "keepalives_idle", "keepalives_interval", "keepalives_count"};
  const char* values[8] = {application_name.c_str(), "10", "5", "3"};
  int n = 4;
  if (!std::getenv("PGCONNECT_TIMEOUT")) {
    keys[n] = "connect_timeout";
    values[n++] = "5";
  }
  keys[n] = "dbname";
  values[n] = dsn.c_str();
  conn_ = PQconnectdbParams(keys, values, 1);
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
    pg_status st{false, "08001", one_line(conn_ ? PQerrorMessage(conn_) : "out of memory"), true};
    close();
    return st;
  }
  PQsetNoticeProcessor(conn_, ignore_notice, nullptr);
  return {};
}

pg_status pg_connection::error_of(const PGresult* r) const {
  pg_status st;
  st.ok = false;
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  st.sqlstate = state ? state : "";
  const char* msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  st.message = one_line(msg ? msg : (conn_ ? PQerrorMessage(conn_) : "no connection"));
  // Besides a lost connection: the server shutting down (57P0x) or no longer
  // able to write (25006: a failed-over old primary, or
  // default_transaction_read_only). Retrying on this connection cannot help;
  // a new one, made through the DSN, lets libpq's host list and
  // target_session_attrs=read-write find the server that can write.
  st.connection_lost = !connected() || st.sqlstate.starts_with("08") || st.sqlstate == "57P01" ||
                       st.sqlstate == "57P02" || st.sqlstate == "57P03" || st.sqlstate == "25006";
  return st;
}

pg_status pg_connection::exec(const char* sql) {
  if (!conn_) return pg_status{false, "08003", "not connected", true};
  pg_result r(PQexec(conn_, sql));
  auto s = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) return {};
  return error_of(r.get());
}

pg_status pg_connection::exec_counted(const char* sql, uint64_t& first_rows) {
  if (!conn_) return pg_status{false, "08003", "not connected", true};
  first_rows = 0;
  if (PQsendQuery(conn_, sql) != 1) return error_of(nullptr);
  // PQexec would keep only the last command's result; read each.
  pg_status st;
  bool first = true;
  while (PGresult* raw = PQgetResult(conn_)) {
    pg_result r(raw);
    auto s = PQresultStatus(raw);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
      if (st.ok) st = error_of(raw);
    } else if (first) {
      first_rows = std::strtoull(PQcmdTuples(raw), nullptr, 10);
    }
    first = false;
  }
  if (st.ok && !connected()) st = error_of(nullptr);
  return st;
}

pg_status pg_connection::query(const char* sql, pg_result& out) {
  if (!conn_) return pg_status{false, "08003", "not connected", true};
  out.reset(PQexec(conn_, sql));
  auto s = out ? PQresultStatus(out.get()) : PGRES_FATAL_ERROR;
  if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) return {};
  return error_of(out.get());
}

pg_status pg_connection::query_params(const char* sql, int n, const char* const* params, pg_result& out) {
  if (!conn_) return pg_status{false, "08003", "not connected", true};
  out.reset(PQexecParams(conn_, sql, n, nullptr, params, nullptr, nullptr, 0));
  auto s = out ? PQresultStatus(out.get()) : PGRES_FATAL_ERROR;
  if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) return {};
  return error_of(out.get());
}

pg_status pg_connection::copy_in(const char* copy_sql, std::string_view data, int64_t* data_sent_ns) {
  return copy_in(copy_sql, std::span<const std::string_view>(&data, 1), data_sent_ns);
}

pg_status pg_connection::copy_in(const char* copy_sql, std::span<const std::string_view> pieces,
                                 int64_t* data_sent_ns) {
  if (!conn_) return pg_status{false, "08003", "not connected", true};
  pg_result start(PQexec(conn_, copy_sql));
  if (!start || PQresultStatus(start.get()) != PGRES_COPY_IN) return error_of(start.get());
  // PQputCopyData buffers and, on a blocking connection, sends as it fills;
  // large batches go in slices so libpq's buffer stays small.
  constexpr size_t slice = 1 << 20;
  for (std::string_view data : pieces) {
    for (size_t off = 0; off < data.size(); off += slice) {
      size_t n = std::min(slice, data.size() - off);
      if (PQputCopyData(conn_, data.data() + off, static_cast<int>(n)) != 1) return error_of(nullptr);
    }
  }
  if (PQputCopyEnd(conn_, nullptr) != 1) return error_of(nullptr);
  if (data_sent_ns) *data_sent_ns = stages::steady_ns();
  pg_status st;
  while (PGresult* raw = PQgetResult(conn_)) {
    pg_result r(raw);
    if (PQresultStatus(raw) != PGRES_COMMAND_OK && st.ok) st = error_of(raw);
  }
  if (st.ok && !connected()) st = error_of(nullptr);
  return st;
}

}  // namespace evpipe::io
