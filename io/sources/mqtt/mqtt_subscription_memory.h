#pragma once
// What each MQTT client id subscribed to, remembered in the database evpipe
// writes to (table evpipe_mqtt_subscriptions, schemas/events.sql), because
// MQTT 3.1.1 cannot list a persistent session's subscriptions. With it, a
// filter removed from `topics` is UNSUBSCRIBEd on the next connect (the
// broker would otherwise keep delivering it forever), and a client id that
// changed is reported as an old session left behind on the broker (issue 9,
// defect 4).
//
// Best effort: the database being away, or the table not migrated yet, costs
// only the unsubscribing (logged once); it never holds up ingest. The
// libpq calls run on one worker thread of its own, never on a session's
// strand; callbacks run on that worker (post to your strand).
//
// Lifecycle: created and started by the run command's setup before the MQTT
// sources, destroyed after them (stop() joins the worker). Thread-safe.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"

namespace evpipe::io {

class pg_connection;

// The client ids one [[sources.mqtt]] connects with: client_id, or
// client_id-1..N with several connections.
[[nodiscard]] std::vector<std::string> mqtt_client_ids(const config::mqtt_source& cfg);

// The name this host writes into the table's host column.
[[nodiscard]] std::string mqtt_memory_host();

// Client ids remembered for a broker of `sources` by this host that no source
// of `sources` uses any more: each one an old session the broker may still
// keep (and queue messages for). One warning line each; empty when none.
// Throws nothing; a failing query yields one line saying so.
[[nodiscard]] std::vector<std::string> mqtt_sessions_left_behind(pg_connection& conn, const std::string& schema,
                                                                 const std::vector<config::mqtt_source>& sources);

// check-config's variant: connects with `dsn` itself; when the database cannot
// be reached it says so in one note instead (check-config does not need a
// database, so this is never an error).
[[nodiscard]] std::vector<std::string> mqtt_sessions_left_behind(const config::settings& s);

class mqtt_subscription_memory {
 public:
  struct filter_row {
    std::string filter;  // as subscribed on the wire ($share/<group>/... included)
    uint8_t qos = 0;     // as granted
  };
  using recall_fn = std::function<void(std::optional<std::vector<filter_row>>)>;

  mqtt_subscription_memory(std::string dsn, std::string schema, std::vector<config::mqtt_source> sources);
  ~mqtt_subscription_memory();
  mqtt_subscription_memory(const mqtt_subscription_memory&) = delete;
  mqtt_subscription_memory& operator=(const mqtt_subscription_memory&) = delete;

  // Starts the worker; its first task logs the sessions left behind.
  void start();
  void stop();

  // What `client_id` subscribed at `broker`; nullopt when it cannot be read.
  void recall(std::string client_id, std::string broker, recall_fn done);
  // After a SUBACK: these filters are subscribed (upserted, updated_at now).
  void remember(std::string client_id, std::string broker, std::vector<filter_row> filters);
  // After an UNSUBACK, or when the broker has no session: no longer subscribed.
  void forget(std::string client_id, std::string broker, std::vector<std::string> filters);

 private:
  using task = std::function<void(pg_connection*)>;  // null: the database cannot be reached
  void post(task t);
  void work();
  [[nodiscard]] std::string table() const;
  void note_failure(const std::string& what);

  const std::string dsn_, schema_;
  const std::vector<config::mqtt_source> sources_;
  const std::string host_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<task> tasks_;
  bool stopping_ = false;
  std::thread worker_;
  std::string last_failure_;  // worker only: each failure logged once
};

}  // namespace evpipe::io
