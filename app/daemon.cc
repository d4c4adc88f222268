#include "app/daemon.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <thread>

#include "app/io_stall_watch.h"
#include "app/live_sources.h"
#include "app/process.h"
#include "app/reload.h"
#include "app/service_notify.h"
#include "io/listener.h"
#include "io/serve/http_server.h"
#include "io/sources/http/http_source.h"
#include "io/sources/mqtt/mqtt_source.h"
#include "io/sources/mqtt/mqtt_subscription_memory.h"
#include "io/postgres/pg_connection.h"
#include "io/postgres/postgres_sink.h"
#include "io/postgres/route_check.h"
#include "io/postgres/partitions.h"
#include "io/postgres/route_keys_pruner.h"
#include "stages/route/active.h"
#include "stages/schema/active.h"
#include "stages/schema/compile.h"
#include "stages/tenant/binding.h"
#include "io/postgres/schema_check.h"
#include "io/sources/tcp/tcp_source.h"
#include "pipeline/batch_trace.h"
#include "pipeline/shard_settings.h"
#include "pipeline/metrics.h"
#include "pipeline/router.h"
#include "pipeline/thread_name.h"
#include "pipeline/intake.h"
#include "read/stream/sse_server.h"
#include "read/stream/stream_hub.h"
#include "schemas/schema.h"

namespace evpipe::app {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGQUIT: return "SIGQUIT";
    case SIGHUP: return "SIGHUP";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "a signal";
  }
}

// Raises the open-file limit, keeps io::descriptor_reserve descriptors back
// from the sources' listeners (for the health endpoint and database
// reconnects), and warns when the connection limits add up to more than the
// process may open.
void guard_descriptors(const config::settings& s) {
  rlim_t limit = raise_open_file_limit();
  if (limit == 0 || limit == RLIM_INFINITY) return;
  uint64_t caps = s.http.max_connections + 2ull * s.effective_shards() + io::descriptor_reserve;
  for (const auto& t : s.tcp_sources) caps += t.max_connections;
  for (const auto& h : s.http_sources) caps += h.max_connections;
  for (const auto& m : s.mqtt_sources) caps += m.connections;
  if (limit > 2 * io::descriptor_reserve) {
    io::descriptor_ceiling.store(static_cast<int>(std::min<rlim_t>(limit, 1 << 30) - io::descriptor_reserve));
  }
  if (caps > limit) {
    spdlog::warn("the connection limits (max_connections of every listener, plus {} kept in reserve) add up to {} "
                 "descriptors, over the open file limit of {}: sources will refuse connections before their limits",
                 io::descriptor_reserve, caps, limit);
  }
}

// The DSN for logs: password masked; "" is libpq's defaults and environment.
std::string describe_dsn(const std::string& dsn) {
  return dsn.empty() ? "(libpq defaults and PG* environment)" : config::mask_dsn(dsn);
}

enum class db_check : uint8_t { ok, unreachable, unusable };

// Whether evpipe can write: the database answers (else `unreachable`, and
// `why` says what libpq said) and holds migrated tables (else `unusable`,
// logged with the hint to migrate).
db_check check_database(const config::settings& s, std::string& why) {
  io::pg_connection conn;
  auto st = conn.connect(s.postgres.dsn, "evpipe-check");
  if (!st.ok) {
    why = st.message;
    return db_check::unreachable;
  }
  // From the catalog only: a query of the table itself would wait for any
  // lock on it (a migration's ACCESS EXCLUSIVE), and evpipe would neither
  // listen nor answer its health checks until the migration ended. Started
  // that way, it listens, and its writes wait (readiness says so).
  // MQTT 5 sources store content type and user properties in the headers
  // columns (docs/mqtt.md); a batch naming a missing column would be retried forever.
  bool mqtt5 = false;
  for (const auto& m : s.mqtt_sources) mqtt5 = mqtt5 || m.protocol == "5";
  for (const char* table : {"events_mirror", "dlq_events"}) {
    std::string qualified = s.postgres.schema.empty() ? table : s.postgres.schema + "." + table;
    io::pg_result r;
    const char* params[1] = {qualified.c_str()};
    // (has_table_privilege's list "SELECT, INSERT" means either: both asked apart.)
    st = conn.query_params("SELECT c.oid IS NOT NULL, coalesce(has_table_privilege(c.oid, 'SELECT') AND "
                           "has_table_privilege(c.oid, 'INSERT'), false), "
                           "EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'headers' "
                           "AND a.attnum > 0 AND NOT a.attisdropped) FROM (SELECT to_regclass($1) AS oid) c",
                           1, params, r);
    if (!st.ok) {
      if (st.sqlstate == "3F000") {  // no such schema
        spdlog::error("table {} does not exist: run `evpipe migrate --config FILE` first", qualified);
      } else {
        spdlog::error("cannot read table {}: {}", qualified, st.message);
      }
      return db_check::unusable;
    }
    if (PQgetvalue(r.get(), 0, 0)[0] != 't') {
      spdlog::error("table {} does not exist: run `evpipe migrate --config FILE` first", qualified);
      return db_check::unusable;
    }
    if (PQgetvalue(r.get(), 0, 1)[0] != 't') {
      spdlog::error("cannot read table {}: the role has no SELECT and INSERT privilege on it", qualified);
      return db_check::unusable;
    }
    if (mqtt5 && PQgetvalue(r.get(), 0, 2)[0] != 't') {
      spdlog::error("table {} has no headers column, where MQTT 5 sources keep content type and user properties: "
                    "run `evpipe migrate --config FILE`",
                    qualified);
      return db_check::unusable;
    }
  }
  // The tables as the shards' sessions resolve them, each with a unique index
  // its ON CONFLICT clause can use.
  if (std::string problem = io::find_schema_problem(conn, s.postgres.schema); !problem.empty()) {
    spdlog::error("{}", problem);
    return db_check::unusable;
  }
  // The routes' tables (docs/routes.md): what check-config --check-db
  // reports would otherwise dead-letter every routed row as db_rejected.
  auto route_problems = io::route_db_problems(conn, s.routes, s.postgres.schema);
  for (const auto& p : route_problems) spdlog::error("{}", p);
  if (!route_problems.empty()) return db_check::unusable;
  return db_check::ok;
}

// The partition maintainer's settings ([storage] and the routes with
// partition_by), the same for migrate's one round and run's thread.
io::partition_options partition_options_of(const config::settings& s) {
  io::partition_options o;
  o.dsn = s.postgres.dsn;
  o.schema = s.postgres.schema;
  o.unit = s.storage.partition;
  o.retention_s = s.storage.retention_s;
  o.premake = s.storage.premake;
  o.interval_s = s.storage.check_interval_s;
  o.lock_timeout_ms = s.storage.lock_timeout_ms;
  o.route_tables = io::partitioned_route_tables(s.routes);  // [[routes]] partition_by
  return o;
}

}  // namespace

int migrate(const config::settings& s) {
  io::pg_connection conn;
  auto st = conn.connect(s.postgres.dsn, "evpipe-migrate");
  if (!st.ok) {
    spdlog::error("cannot connect to PostgreSQL at {}: {}", describe_dsn(s.postgres.dsn), st.message);
    return 1;
  }
  // [storage] partition (docs/partitions.md): partitioned tables are created
  // before events.sql, which then adds their columns as to plain ones.
  if (std::string error = io::prepare_partitioned_tables(conn, s.postgres.schema, s.storage.partition);
      !error.empty()) {
    spdlog::error("{}", error);
    return 1;
  }
  if (std::string error = io::migrate_schema(conn, s.postgres.schema); !error.empty()) {
    spdlog::error("{}", error);
    return 1;
  }
  // Routes keep the identities of the messages they stored (docs/routes.md).
  if (!s.routes.empty()) {
    if (std::string error = io::migrate_route_keys(conn, s.postgres.schema); !error.empty()) {
      spdlog::error("{}", error);
      return 1;
    }
  }
  if (s.storage.partitioned()) {
    // The partitions of now and the next periods, so that the first rows do
    // not all go to the DEFAULT partition.
    io::partition_round done;
    if (auto st = io::partition_maintainer::maintain_once(conn, partition_options_of(s), done); !st.ok) {
      spdlog::error("cannot create the partitions: {}", st.message);
      return 1;
    }
  }
  spdlog::info("schema is up to date: events_mirror, dlq_events");
  return 0;
}

int run_daemon(const config::settings& s, const run_hooks& hooks) {
  pipeline::thread_name named("main");
  // Declared first so that it is destroyed last: the shards' batches hold
  // sources' connections (their event origins), which own Asio objects.
  asio::io_context ioc(static_cast<int>(s.pipeline.io_threads));
  // Registered before anything starts: a signal that arrives during start-up
  // waits in the set and is handled as soon as the daemon runs (the table is
  // in docs/operations.md). SIGINT, SIGTERM and SIGQUIT drain and exit 0
  // within shutdown_timeout_ms; SIGHUP reloads the config; SIGUSR1 and
  // SIGUSR2 are logged and ignored.
  asio::signal_set stop_signals(ioc, SIGINT, SIGTERM, SIGQUIT);
  asio::signal_set ignored_signals(ioc, SIGHUP, SIGUSR1, SIGUSR2);

  guard_descriptors(s);
  // Started before its database ([postgres] startup = "wait"): everything
  // starts, the router stays closed so that sources read nothing, and a
  // watcher opens it once the database answers with migrated tables.
  std::string why;
  db_check first = check_database(s, why);
  if (first == db_check::unusable) return 1;
  bool waiting_for_db = first == db_check::unreachable;
  if (waiting_for_db) {
    if (s.postgres.startup == "fail") {
      spdlog::error("cannot connect to PostgreSQL at {}: {}", describe_dsn(s.postgres.dsn), why);
      return 1;
    }
    spdlog::warn("cannot connect to PostgreSQL at {}: {}; waiting for it (listeners and /metrics are up, "
                 "sources read nothing until it answers)",
                 describe_dsn(s.postgres.dsn), why);
  }

  // Routes (docs/routes.md): compiled once, before any sink or source exists.
  try {
    stages::route::set_active_routes(std::make_shared<const stages::route::route_set>(s.routes));
  } catch (const config::config_error& e) {
    spdlog::error("config error: {}", e.what());
    return 2;
  }
  // Payload schemas (docs/schemas.md): a file that does not compile stops the start.
  try {
    if (size_t n = stages::schema::install_schemas(s.schemas); n > 0) {
      spdlog::info("payload schemas: {} files from {}", n, s.schemas.dir);
    }
  } catch (const stages::schema::schema_error& e) {
    spdlog::error("schema error: {}", e.what());
    return 2;
  }

  pipeline::metrics_registry registry(s.metrics.prefix, s.metrics.max_label_values, s.metrics.max_series);
  // The read side's stream hub (started below with its listener), made
  // first so that /metrics can show its probe and the shards can wake it.
  std::unique_ptr<read::stream_hub> stream_hub;
  if (!s.stream.listen.empty()) {
    read::stream_hub_options so;
    so.dsn = s.postgres.dsn;
    so.schema = s.postgres.schema;
    so.poll_ms = s.stream.poll_ms;
    so.max_client_buffer_bytes = s.stream.max_client_buffer_bytes;
    so.writer_threads = s.stream.writer_threads;
    so.max_fanout_writes_per_s = s.stream.max_fanout_writes_per_s;
    stream_hub = std::make_unique<read::stream_hub>(so);
  }

  uint32_t nshards = s.effective_shards();
  pipeline::shard_options opts = pipeline::shard_options_from(s);
  if (stream_hub && s.stream.wake_on_commit) {
    opts.on_commit = [hub = stream_hub.get()](int64_t commit_ns) { hub->note_commit(commit_ns); };
  }

  std::vector<std::unique_ptr<pipeline::shard>> shards;
  for (uint32_t i = 0; i < nshards; ++i) {
    auto sink = std::make_unique<io::postgres_sink>(s.postgres.dsn, "evpipe-shard-" + std::to_string(i),
                                                     s.postgres.schema);
    // While waiting, the shard connects on its own (its idle check) later.
    if (!sink->connect() && !waiting_for_db) {
      spdlog::error("shard {}: cannot connect to PostgreSQL: {}", i, sink->last_error());
      return 1;
    }
    shards.push_back(std::make_unique<pipeline::shard>(i, opts, std::move(sink), registry.add_shard(), registry));
  }
  // Slow-batch traces and I/O stall checks (docs/operations.md, "Hiccups").
  pipeline::set_slow_batch_threshold(std::chrono::milliseconds(s.pipeline.slow_batch_ms));
  pipeline::router router(std::move(shards), s.pipeline.queue_capacity);
  router.set_open(!waiting_for_db);
  registry.watch_shard_leases(router.lease_counts());

  stages::envelope_limits limits;
  limits.max_event_bytes = s.events.max_event_bytes;
  limits.max_key_bytes = s.events.max_key_bytes;
  limits.max_depth = s.events.max_depth;
  pipeline::publish_event_limits(limits);  // every connection follows them; a reload publishes new ones
  stages::tenant::publish_tenants(s.tenants);  // before any source starts: sources bind to it (docs/tenants.md)

  // What each MQTT client id subscribed, so removed filters are unsubscribed
  // (declared before the sources: it outlives them).
  std::unique_ptr<io::mqtt_subscription_memory> mqtt_memory;
  if (!s.mqtt_sources.empty()) {
    mqtt_memory = std::make_unique<io::mqtt_subscription_memory>(s.postgres.dsn, s.postgres.schema, s.mqtt_sources);
    mqtt_memory->start();
  }
  // The sources: where events enter. Each kind shares one metrics probe.
  live_sources sources(ioc, router, registry, limits, mqtt_memory.get());

  asio::io_context http_ioc(1);
  std::unique_ptr<io::http_server> http;
  try {
    sources.start_all(s);
    if (!s.http.listen.empty()) {
      io::http_server_options ho;
      ho.listen = config::parse_listen(s.http.listen, "[http] listen");
      ho.max_connections = s.http.max_connections;
      ho.idle_timeout = std::chrono::seconds(s.http.idle_timeout_s);
      ho.max_commit_stall = std::chrono::milliseconds(s.health.max_commit_stall_ms);
      ho.source_notes = [&sources] {
        auto notes = sources.mqtt_notes();
        for (auto& n : sources.nats_notes()) notes.push_back(std::move(n));
        return notes;
      };
      if (stream_hub) {
        ho.extra_metrics = [hub = stream_hub.get(), prefix = s.metrics.prefix] {
          return read::render_stream_metrics(hub->probe(), prefix);
        };
      }
      http = std::make_unique<io::http_server>(http_ioc, std::move(ho), registry);
      http->start();
      // /metrics is rendered on http_ioc's one thread: a reload adds a
      // source kind's probe there, never during a scrape.
      sources.set_metrics_thread([&http_ioc](std::function<void()> fn) {
        std::promise<void> done;
        asio::post(http_ioc, [&] {
          fn();
          done.set_value();
        });
        done.get_future().wait();
      });
    }
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  // The read side's live stream (docs/read.md): one tail reader, connected
  // to PostgreSQL only while clients listen. The default address is best
  // effort (a second evpipe on the host runs without a stream); one the
  // file names must be free.
  std::unique_ptr<read::sse_server> stream;
  if (stream_hub) {
    try {
      stream = std::make_unique<read::sse_server>(s.stream, *stream_hub);
    } catch (const std::exception& e) {
      if (s.stream.listen_set) {
        spdlog::error("{}", e.what());
        return 1;
      }
      spdlog::warn("{}: running without the stream (set [stream] listen to another address, or \"\" to disable it)",
                   e.what());
    }
    if (stream) {
      // The page's /v1/metrics: the daemon's /metrics, rendered where
      // /metrics is (on http_ioc's thread, never during a reload's change).
      stream->set_metrics_text([&registry, &http_ioc, has_http = http != nullptr, hub = stream_hub.get(),
                                prefix = s.metrics.prefix]() -> std::string {
        auto render = [&] { return registry.render() + read::render_stream_metrics(hub->probe(), prefix); };
        if (!has_http) return render();
        auto done = std::make_shared<std::promise<std::string>>();
        auto text = done->get_future();
        asio::post(http_ioc, [done, render] { done->set_value(render()); });
        if (text.wait_for(std::chrono::seconds(5)) != std::future_status::ready) return "# metrics unavailable\n";
        return text.get();
      });
      stream_hub->start();
      stream->start();
      spdlog::info("stream of committed events on http://{}:{}/v1/stream", s.stream.listen.substr(0, s.stream.listen.rfind(':')),
                   stream->port());
    }
  }
  router.start();
  // Keys older than [route_keys] retention_s leave evpipe_route_keys (docs/routes.md),
  // while routes are published (a reload may add the first ones).
  std::unique_ptr<io::route_keys_pruner> keys_pruner;
  if (s.route_keys.retention_s > 0) {
    keys_pruner = std::make_unique<io::route_keys_pruner>(io::route_keys_pruning{
        s.postgres.dsn, s.postgres.schema, s.route_keys.retention_s, s.route_keys.prune_batch,
        s.route_keys.prune_interval_ms});
    keys_pruner->start();
  }
  // [storage] partition: partitions made ahead, dropped past the retention
  // (docs/partitions.md), on a thread and connection of their own.
  std::unique_ptr<io::partition_maintainer> partitions;
  if (s.storage.partitioned()) {
    partitions = std::make_unique<io::partition_maintainer>(partition_options_of(s));  // routes as at start
    partitions->start();
  }

  for (const auto& line : sources.describe()) spdlog::info("source: {}", line);
  if (http) spdlog::info("metrics and health on http://{}:{}/metrics", s.http.listen.substr(0, s.http.listen.rfind(':')), http->port());
  spdlog::info("{} shards, batch max {} rows / {} bytes / {} ms linger, database {}", nshards, s.batch.max_rows,
               s.batch.max_bytes, s.batch.linger_ms, describe_dsn(s.postgres.dsn));
  if (hooks.on_listening) hooks.on_listening(sources.first_tcp_port(), http ? http->port() : 0);
  // The sources listen and the database answered (check_database, shard
  // connects); while waiting for the database, READY comes when it answers.
  if (waiting_for_db) {
    service_notify::waiting_for_database(why);
  } else {
    service_notify::ready(ioc);
  }

  auto work = asio::make_work_guard(ioc);
  std::optional<io_stall_watch> stall_watch;  // its timers end with ioc.stop()
  if (s.pipeline.slow_batch_ms > 0) {
    stall_watch.emplace(ioc, s.pipeline.io_threads, std::chrono::milliseconds(s.pipeline.slow_batch_ms));
    stall_watch->start();
  }
  auto http_work = asio::make_work_guard(http_ioc);
  std::thread shutdown_thread;
  int exit_code = 0;

  // Waiting for the database: checks with the write retries' backoff, one log
  // line per new problem; opens the router once the tables are there, and
  // ends the process (exit 1, after a normal drain) when the database answers
  // without evpipe's tables.
  std::atomic<bool> stop_waiting{false};
  std::thread db_waiter;
  if (waiting_for_db) {
    db_waiter = std::thread([&] {
      auto delay = std::chrono::milliseconds(s.postgres.retry_base_ms);
      std::string last = why;
      while (!stop_waiting.load()) {
        auto until = std::chrono::steady_clock::now() + delay;
        while (!stop_waiting.load() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
        if (stop_waiting.load()) return;
        std::string now_why;
        db_check r = check_database(s, now_why);
        if (r == db_check::ok) {
          spdlog::info("PostgreSQL answers: sources read now");
          router.set_open(true);
          asio::post(ioc, [&ioc] { service_notify::ready(ioc); });
          return;
        }
        if (r == db_check::unusable) {
          exit_code = 1;
          std::raise(SIGTERM);  // the usual drain; nothing was read
          return;
        }
        if (now_why != last) {
          spdlog::warn("still waiting for PostgreSQL: {}", now_why);
          last = now_why;
        }
        delay = std::min(delay * 2, std::chrono::milliseconds(s.postgres.retry_max_ms));
      }
    });
  }
  // SIGHUP reloads the config (without a config file, as in tests that run
  // the daemon in-process, it is logged and ignored like SIGUSR1/2).
  std::unique_ptr<config_reloader> reloader;
  if (!hooks.config_path.empty()) {
    reloader = std::make_unique<config_reloader>(hooks.config_path, s, router, registry, sources);
  }
  std::function<void()> wait_ignored = [&] {
    ignored_signals.async_wait([&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP && reloader) {
        reloader->request();
      } else {
        spdlog::warn("received {}: ignored", signal_name(sig));
      }
      wait_ignored();
    });
  };
  wait_ignored();
  // The drain runs off the I/O threads (it joins shards), which keep
  // delivering the last acks meanwhile. Commits get the time budget but for a
  // reserve in which the last acks are written; a watchdog ends the process
  // at the budget whatever a dependency is doing (a hung query, a DNS lookup,
  // a broker): what was not committed was not acknowledged, and its producers
  // resend it.
  auto drain_done = std::make_shared<std::atomic<bool>>(false);
  auto start_drain = [&](int sig) {
    const auto budget = std::chrono::milliseconds(s.pipeline.shutdown_timeout_ms);
    const auto t0 = std::chrono::steady_clock::now();
    const auto end = t0 + budget;
    const auto commit_deadline = end - std::min<std::chrono::milliseconds>(budget / 5, 2000ms);
    spdlog::info("received {}: draining (up to {} ms)", signal_name(sig), s.pipeline.shutdown_timeout_ms);
    if (http) http->set_draining();
    stop_waiting.store(true);
    service_notify::stopping();
    std::thread([drain_done, end, budget] {
      std::this_thread::sleep_until(end);
      if (exit_started()) return;
      if (drain_done->load()) {
        // Drained, but the teardown waits on a call nothing can interrupt:
        // Asio joins its resolver thread, which may sit in getaddrinfo for
        // the resolver's whole timeout (issue 18).
        spdlog::warn("shutdown_timeout_ms ({} ms) reached after the drain, with the teardown still waiting "
                     "(a DNS lookup?): exiting now",
                     budget.count());
      } else {
        spdlog::warn("shutdown_timeout_ms ({} ms) reached before the drain finished: exiting now; events not "
                     "committed were not acknowledged and will be resent by their producers",
                     budget.count());
      }
      exit_process(0, exit_mode::immediate, 200);
    }).detach();
    shutdown_thread = std::thread([&, commit_deadline, end] {
      // Waits for a reload under way (bounded by its own stop budget); a
      // reload that comes later changes no source.
      sources.stop_reading_all();
      sources.wait_not_reading(commit_deadline);
      router.stop(commit_deadline);  // drains queues and commits every batch
      // Connections close themselves once their last ack is written.
      auto ack_deadline = std::min(std::chrono::steady_clock::now() + 2s, end - 100ms);
      sources.close_all(ack_deadline);
      if (stream) stream->stop();
      if (stream_hub) stream_hub->stop();
      if (http) http->stop();
      work.reset();
      http_work.reset();
      std::this_thread::sleep_for(50ms);
      drain_done->store(true);
      ioc.stop();
      http_ioc.stop();
    });
  };
  bool draining = false;
  std::function<void()> wait_stop = [&] {
    stop_signals.async_wait([&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (draining) {
        spdlog::info("received {} while draining: the drain goes on (at most {} ms in all)", signal_name(sig),
                     s.pipeline.shutdown_timeout_ms);
        wait_stop();
        return;
      }
      draining = true;
      wait_stop();
      start_drain(sig);
    });
  };
  wait_stop();

  std::thread http_thread([&] {
    pipeline::thread_name named("http");
    http_ioc.run();
  });
  std::vector<std::thread> io_threads;
  for (uint32_t i = 1; i < s.pipeline.io_threads; ++i) {
    io_threads.emplace_back([&, i] {
      pipeline::thread_name named("io-" + std::to_string(i), "\"io_thread\":" + std::to_string(i));
      ioc.run();
    });
  }
  ioc.run();  // the main thread ("main") runs the sources too
  for (auto& t : io_threads) t.join();
  http_thread.join();
  if (shutdown_thread.joinable()) shutdown_thread.join();
  if (reloader) reloader->stop();
  stop_waiting.store(true);
  if (db_waiter.joinable()) db_waiter.join();
  spdlog::info("stopped");
  return exit_code;
}

}  // namespace evpipe::app
