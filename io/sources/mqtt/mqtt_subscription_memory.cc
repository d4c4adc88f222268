#include "io/sources/mqtt/mqtt_subscription_memory.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <map>
#include <set>

#include "io/postgres/pg_connection.h"

namespace evpipe::io {

namespace {

constexpr const char* table_name = "evpipe_mqtt_subscriptions";

std::string qualified(const std::string& schema) {
  return schema.empty() ? std::string(table_name) : schema + "." + table_name;
}

std::string missing_table_hint(const std::string& schema) {
  return "table " + qualified(schema) + " does not exist (run `evpipe migrate --config FILE`)";
}

}  // namespace

std::vector<std::string> mqtt_client_ids(const config::mqtt_source& cfg) {
  std::vector<std::string> ids;
  for (uint32_t i = 0; i < cfg.connections; ++i) {
    ids.push_back(cfg.connections == 1 ? cfg.client_id : cfg.client_id + "-" + std::to_string(i + 1));
  }
  return ids;
}

std::string mqtt_memory_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "";
  return name;
}

std::vector<std::string> mqtt_sessions_left_behind(pg_connection& conn, const std::string& schema,
                                                   const std::vector<config::mqtt_source>& sources) {
  // Per broker, every client id this configuration connects with there: a
  // row of the same host and broker under another id is a session the
  // configuration no longer uses. (Other hosts' rows are other evpipe
  // processes, e.g. members of the same shared_group: not ours to judge.)
  std::map<std::string, std::set<std::string>> ids_by_broker;
  for (const auto& m : sources) {
    for (auto& id : mqtt_client_ids(m)) ids_by_broker[m.broker.str()].insert(std::move(id));
  }
  std::vector<std::string> out;
  std::string host = mqtt_memory_host();
  std::string sql = "SELECT client_id, string_agg(filter, ', ' ORDER BY filter), max(updated_at)::text FROM " +
                    qualified(schema) +
                    " WHERE broker = $1 AND host = $2 AND NOT (client_id = ANY (string_to_array($3, E'\\n')))"
                    " GROUP BY client_id ORDER BY client_id";
  for (const auto& [broker, ids] : ids_by_broker) {
    std::string joined;
    for (const auto& id : ids) joined += (joined.empty() ? "" : "\n") + id;
    const char* params[3] = {broker.c_str(), host.c_str(), joined.c_str()};
    pg_result res;
    auto st = conn.query_params(sql.c_str(), 3, params, res);
    if (!st.ok) {
      out.push_back(st.sqlstate == "42P01" ? "cannot check for MQTT sessions left behind: " + missing_table_hint(schema)
                                           : "cannot check for MQTT sessions left behind: " + st.message);
      return out;
    }
    for (int r = 0; r < PQntuples(res.get()); ++r) {
      std::string old_id = PQgetvalue(res.get(), r, 0);
      out.push_back("mqtt broker " + broker + ": client id \"" + old_id + "\" (subscribed to " +
                    PQgetvalue(res.get(), r, 1) + ", last at " + PQgetvalue(res.get(), r, 2) +
                    ") is no longer in the configuration: its persistent session is left behind on the broker, "
                    "which keeps queueing messages for it; to end it, connect once as \"" + old_id +
                    "\" with a clean session (e.g. mosquitto_sub -i '" + old_id +
                    "' -t x -E), then DELETE FROM " + qualified(schema) + " WHERE client_id = '" + old_id + "'");
    }
  }
  return out;
}

std::vector<std::string> mqtt_sessions_left_behind(const config::settings& s) {
  if (s.mqtt_sources.empty()) return {};
  pg_connection conn;
  auto st = conn.connect(s.postgres.dsn, "evpipe-check-config");
  if (!st.ok) {
    return {"cannot reach the database to check for MQTT sessions left behind by an earlier client_id (" +
            st.message + "); `evpipe run` checks again at start"};
  }
  return mqtt_sessions_left_behind(conn, s.postgres.schema, s.mqtt_sources);
}

mqtt_subscription_memory::mqtt_subscription_memory(std::string dsn, std::string schema,
                                                   std::vector<config::mqtt_source> sources)
    : dsn_(std::move(dsn)), schema_(std::move(schema)), sources_(std::move(sources)), host_(mqtt_memory_host()) {}

mqtt_subscription_memory::~mqtt_subscription_memory() { stop(); }

void mqtt_subscription_memory::start() {
  worker_ = std::thread([this] { work(); });
  post([this](pg_connection* conn) {
    if (!conn) return;
    for (const auto& w : mqtt_sessions_left_behind(*conn, schema_, sources_)) spdlog::warn("{}", w);
  });
}

void mqtt_subscription_memory::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::string mqtt_subscription_memory::table() const { return qualified(schema_); }

void mqtt_subscription_memory::post(task t) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    tasks_.push_back(std::move(t));
  }
  cv_.notify_one();
}

void mqtt_subscription_memory::note_failure(const std::string& what) {
  if (what == last_failure_) return;
  last_failure_ = what;
  spdlog::warn("mqtt: cannot use the remembered subscriptions ({}): filters removed from `topics` are not "
               "unsubscribed until it works",
               what);
}

void mqtt_subscription_memory::work() {
  pg_connection conn;
  for (;;) {
    task t;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (stopping_) return;  // what is left is best effort: the next start redoes it
      t = std::move(tasks_.front());
      tasks_.pop_front();
    }
    if (!conn.connected()) {
      auto st = conn.connect(dsn_, "evpipe-mqtt-subscriptions");
      if (!st.ok) {
        note_failure("database: " + st.message);
        t(nullptr);
        continue;
      }
    }
    t(&conn);
  }
}

void mqtt_subscription_memory::recall(std::string client_id, std::string broker, recall_fn done) {
  post([this, client_id = std::move(client_id), broker = std::move(broker), done = std::move(done)](pg_connection* conn) {
    if (!conn) return done(std::nullopt);
    std::string sql = "SELECT filter, qos FROM " + table() + " WHERE client_id = $1 AND broker = $2 ORDER BY filter";
    const char* params[2] = {client_id.c_str(), broker.c_str()};
    pg_result res;
    auto st = conn->query_params(sql.c_str(), 2, params, res);
    if (!st.ok) {
      note_failure(st.sqlstate == "42P01" ? missing_table_hint(schema_) : st.message);
      if (st.connection_lost) conn->close();
      return done(std::nullopt);
    }
    std::vector<filter_row> rows;
    for (int r = 0; r < PQntuples(res.get()); ++r) {
      rows.push_back({PQgetvalue(res.get(), r, 0), static_cast<uint8_t>(std::atoi(PQgetvalue(res.get(), r, 1)))});
    }
    done(std::move(rows));
  });
}

void mqtt_subscription_memory::remember(std::string client_id, std::string broker, std::vector<filter_row> filters) {
  post([this, client_id = std::move(client_id), broker = std::move(broker), filters = std::move(filters)](pg_connection* conn) {
    if (!conn) return;
    std::string sql = "INSERT INTO " + table() +
                      " (client_id, broker, filter, qos, host, updated_at) VALUES ($1, $2, $3, $4::smallint, $5, now())"
                      " ON CONFLICT (client_id, broker, filter) DO UPDATE SET qos = EXCLUDED.qos, host = EXCLUDED.host,"
                      " updated_at = now()";
    for (const auto& f : filters) {
      std::string qos = std::to_string(f.qos);
      const char* params[5] = {client_id.c_str(), broker.c_str(), f.filter.c_str(), qos.c_str(), host_.c_str()};
      pg_result res;
      auto st = conn->query_params(sql.c_str(), 5, params, res);
      if (!st.ok) {
        note_failure(st.sqlstate == "42P01" ? missing_table_hint(schema_) : st.message);
        if (st.connection_lost) conn->close();
        return;
      }
    }
  });
}

void mqtt_subscription_memory::forget(std::string client_id, std::string broker, std::vector<std::string> filters) {
  post([this, client_id = std::move(client_id), broker = std::move(broker), filters = std::move(filters)](pg_connection* conn) {
    if (!conn) return;
    std::string sql = "DELETE FROM " + table() + " WHERE client_id = $1 AND broker = $2 AND filter = $3";
    for (const auto& f : filters) {
      const char* params[3] = {client_id.c_str(), broker.c_str(), f.c_str()};
      pg_result res;
      auto st = conn->query_params(sql.c_str(), 3, params, res);
      if (!st.ok) {
        note_failure(st.sqlstate == "42P01" ? missing_table_hint(schema_) : st.message);
        if (st.connection_lost) conn->close();
        return;
      }
    }
  });
}

}  // namespace evpipe::io
