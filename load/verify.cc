#include "load/verify.h"

#include <libpq-fe.h>

#include <memory>
#include <stdexcept>

namespace evpipe::load {

std::string verify_report::summary() const {
  std::string s = "events_mirror: " + std::to_string(found_rows) + " rows for " + std::to_string(expected_rows) +
                  " expected keys, " + std::to_string(missing) + " missing, " + std::to_string(duplicated) +
                  " duplicated, " + std::to_string(stray) + " stray; dlq_events: " + std::to_string(found_dlq) +
                  " rows, " + std::to_string(expected_dlq) + " expected";
  return s;
}

verify_report compare(const std::unordered_set<std::string>& expected_keys,
                      const std::vector<std::pair<std::string, uint64_t>>& stored, uint64_t expected_dlq,
                      uint64_t found_dlq) {
  verify_report r;
  r.expected_rows = expected_keys.size();
  r.expected_dlq = expected_dlq;
  r.found_dlq = found_dlq;
  std::unordered_set<std::string> seen;
  for (const auto& [key, rows] : stored) {
    r.found_rows += rows;
    if (!expected_keys.count(key)) {
      ++r.stray;
      if (r.examples.size() < 10) r.examples.push_back("stray: " + key);
      continue;
    }
    seen.insert(key);
    if (rows > 1) {
      ++r.duplicated;
      if (r.examples.size() < 10) r.examples.push_back("duplicated (" + std::to_string(rows) + " rows): " + key);
    }
  }
  for (const auto& key : expected_keys) {
    if (!seen.count(key)) {
      ++r.missing;
      if (r.examples.size() < 10) r.examples.push_back("missing: " + key);
    }
  }
  if (found_dlq != expected_dlq && r.examples.size() < 10) {
    r.examples.push_back("dlq_events holds " + std::to_string(found_dlq) + " events of the run, " +
                         std::to_string(expected_dlq) + " expected");
  }
  return r;
}

std::unordered_set<std::string> generated_keys(const std::string& run_id, const std::vector<uint64_t>& valid_per_stream) {
  std::unordered_set<std::string> keys;
  for (size_t s = 0; s < valid_per_stream.size(); ++s) {
    for (uint64_t n = 0; n < valid_per_stream[s]; ++n) {
      keys.insert(run_id + "-" + std::to_string(s) + "-" + std::to_string(n));
    }
  }
  return keys;
}

namespace {
struct conn_free {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct result_free {
  void operator()(PGresult* r) const { PQclear(r); }
};
using result = std::unique_ptr<PGresult, result_free>;

result query(PGconn* c, const char* sql, const std::string& param) {
  const char* values[1] = {param.c_str()};
  result r(PQexecParams(c, sql, 1, nullptr, values, nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    throw std::runtime_error(std::string("verify: ") + PQresultErrorMessage(r.get()));
  }
  return r;
}
}  // namespace

verify_report verify_run(const std::string& dsn, const std::string& run_id,
                         const std::unordered_set<std::string>& expected_keys, uint64_t expected_dlq) {
  std::unique_ptr<PGconn, conn_free> c(PQconnectdb(dsn.c_str()));
  if (PQstatus(c.get()) != CONNECTION_OK) throw std::runtime_error(std::string("verify: ") + PQerrorMessage(c.get()));
  const std::string prefix = run_id + "-";
  // Prefix comparison rather than LIKE, so no character of the run id is special.
  result rows = query(c.get(),
                      "SELECT idempotency_key, count(*) FROM events_mirror "
                      "WHERE left(idempotency_key, length($1)) = $1 GROUP BY 1",
                      prefix);
  std::vector<std::pair<std::string, uint64_t>> stored;
  for (int i = 0; i < PQntuples(rows.get()); ++i) {
    stored.emplace_back(PQgetvalue(rows.get(), i, 0), std::stoull(PQgetvalue(rows.get(), i, 1)));
  }
  // Dead letters of the run carry its prefix somewhere in their bytes.
  result dlq = query(c.get(),
                     "SELECT count(*) FROM dlq_events WHERE position(convert_to($1, 'UTF8') IN "
                     "coalesce(raw, convert_to(payload::text, 'UTF8'))) > 0",
                     prefix);
  return compare(expected_keys, stored, expected_dlq, std::stoull(PQgetvalue(dlq.get(), 0, 0)));
}

}  // namespace evpipe::load
