#include "app/daemon.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <thread>

#include "io/serve/http_server.h"
#include "io/sources/http/http_source.h"
#include "io/sources/mqtt/mqtt_source.h"
#include "io/postgres/pg_connection.h"
#include "io/postgres/postgres_sink.h"
#include "io/postgres/schema_check.h"
#include "io/sources/tcp/tcp_source.h"
#include "pipeline/metrics.h"
#include "pipeline/router.h"
#include "schemas/schema.h"

namespace evpipe::app {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// The DSN for logs: password masked; "" is libpq's defaults and environment.
std::string describe_dsn(const std::string& dsn) {
  return dsn.empty() ? "(libpq defaults and PG* environment)" : config::mask_dsn(dsn);
}

// Fails fast, with one clear line, when the database is unreachable or not
// migrated.
bool check_database(const config::settings& s) {
  io::pg_connection conn;
  auto st = conn.connect(s.postgres.dsn, "evpipe-check");
  if (!st.ok) {
    spdlog::error("cannot connect to PostgreSQL at {}: {}", describe_dsn(s.postgres.dsn), st.message);
    return false;
  }
  for (const char* table : {"events_mirror", "dlq_events"}) {
    std::string qualified = s.postgres.schema.empty() ? table : s.postgres.schema + "." + table;
    std::string sql = "SELECT 1 FROM " + qualified + " LIMIT 0";
    st = conn.exec(sql.c_str());
    if (!st.ok) {
      if (st.sqlstate == "42P01" || st.sqlstate == "3F000") {  // no such table, or schema
        spdlog::error("table {} does not exist: run `evpipe migrate --config FILE` first", qualified);
      } else {
        spdlog::error("cannot read table {}: {}", qualified, st.message);
      }
      return false;
    }
  }
  // The tables as the shards' sessions resolve them, each with a unique index
  // its ON CONFLICT clause can use.
  if (std::string problem = io::find_schema_problem(conn, s.postgres.schema); !problem.empty()) {
    spdlog::error("{}", problem);
    return false;
  }
  return true;
}

}  // namespace

int migrate(const config::settings& s) {
  io::pg_connection conn;
  auto st = conn.connect(s.postgres.dsn, "evpipe-migrate");
  if (!st.ok) {
    spdlog::error("cannot connect to PostgreSQL at {}: {}", describe_dsn(s.postgres.dsn), st.message);
    return 1;
  }
  if (std::string error = io::migrate_schema(conn, s.postgres.schema); !error.empty()) {
    spdlog::error("{}", error);
    return 1;
  }
  spdlog::info("schema is up to date: events_mirror, dlq_events");
  return 0;
}

int run_daemon(const config::settings& s, const run_hooks& hooks) {
  if (!check_database(s)) return 1;

  // Declared first so that it is destroyed last: the shards' batches hold
  // sources' connections (their event origins), which own Asio objects.
  asio::io_context ioc(static_cast<int>(s.pipeline.io_threads));

  pipeline::metrics_registry registry(s.metrics.prefix, s.metrics.max_label_values);
  uint32_t nshards = s.effective_shards();
  pipeline::shard_options opts;
  opts.max_rows = s.batch.max_rows;
  opts.max_bytes = s.batch.max_bytes;
  opts.linger = std::chrono::milliseconds(s.batch.linger_ms);
  opts.window_keys = s.dedup.window_keys;
  opts.retry_base = std::chrono::milliseconds(s.postgres.retry_base_ms);
  opts.retry_max = std::chrono::milliseconds(s.postgres.retry_max_ms);
  opts.max_attempts = s.postgres.max_attempts;

  std::vector<std::unique_ptr<pipeline::shard>> shards;
  for (uint32_t i = 0; i < nshards; ++i) {
    auto sink = std::make_unique<io::postgres_sink>(s.postgres.dsn, "evpipe-shard-" + std::to_string(i),
                                                     s.postgres.schema);
    if (!sink->connect()) {
      spdlog::error("shard {}: cannot connect to PostgreSQL: {}", i, sink->last_error());
      return 1;
    }
    shards.push_back(std::make_unique<pipeline::shard>(i, opts, std::move(sink), registry.add_shard(), registry));
  }
  pipeline::router router(std::move(shards), s.pipeline.queue_capacity);

  stages::envelope_limits limits;
  limits.max_event_bytes = s.events.max_event_bytes;
  limits.max_key_bytes = s.events.max_key_bytes;
  limits.max_depth = s.events.max_depth;

  // The sources: where events enter. Each kind shares one metrics probe.
  std::vector<std::unique_ptr<io::source>> sources;
  io::tcp_source* first_tcp = nullptr;
  if (!s.tcp_sources.empty()) {
    auto& probe = registry.add_source("tcp");
    for (const auto& cfg : s.tcp_sources) {
      auto src = std::make_unique<io::tcp_source>(ioc, cfg, router, probe, limits);
      if (!first_tcp) first_tcp = src.get();
      sources.push_back(std::move(src));
    }
  }
  if (!s.mqtt_sources.empty()) {
    auto& probe = registry.add_source("mqtt");
    for (const auto& cfg : s.mqtt_sources) sources.push_back(std::make_unique<io::mqtt_source>(ioc, cfg, router, probe, limits));
  }
  if (!s.http_sources.empty()) {
    auto& probe = registry.add_source("http");
    for (const auto& cfg : s.http_sources) sources.push_back(std::make_unique<io::http_source>(ioc, cfg, router, probe, limits));
  }

  asio::io_context http_ioc(1);
  std::unique_ptr<io::http_server> http;
  try {
    for (auto& src : sources) src->start();
    if (!s.http.listen.empty()) {
      http = std::make_unique<io::http_server>(http_ioc, config::parse_endpoint(s.http.listen, "[http] listen"), registry);
      http->start();
    }
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  router.start();

  for (const auto& src : sources) spdlog::info("source: {}", src->describe());
  if (http) spdlog::info("metrics and health on http://{}:{}/metrics", s.http.listen.substr(0, s.http.listen.rfind(':')), http->port());
  spdlog::info("{} shards, batch max {} rows / {} bytes / {} ms linger, database {}", nshards, s.batch.max_rows,
               s.batch.max_bytes, s.batch.linger_ms, describe_dsn(s.postgres.dsn));
  if (hooks.on_listening) hooks.on_listening(first_tcp ? first_tcp->port() : 0, http ? http->port() : 0);

  auto work = asio::make_work_guard(ioc);
  auto http_work = asio::make_work_guard(http_ioc);
  std::thread shutdown_thread;
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("received {}: draining (up to {} ms)", sig == SIGINT ? "SIGINT" : "SIGTERM",
                 s.pipeline.shutdown_timeout_ms);
    // Shutdown blocks (joins shards), so it runs off the I/O thread, which
    // keeps delivering the last acks meanwhile.
    shutdown_thread = std::thread([&] {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(s.pipeline.shutdown_timeout_ms);
      for (auto& src : sources) src->stop_reading();
      for (auto& src : sources) {
        while (src->reading_connections() > 0 && std::chrono::steady_clock::now() < deadline) {
          std::this_thread::sleep_for(1ms);
        }
      }
      router.stop(deadline);  // drains queues and commits every batch
      // Connections close themselves once their last ack is written.
      auto ack_deadline = std::chrono::steady_clock::now() + 2s;
      for (auto& src : sources) {
        while (src->open_connections() > 0 && std::chrono::steady_clock::now() < ack_deadline) {
          std::this_thread::sleep_for(1ms);
        }
        src->close();
      }
      if (http) http->stop();
      work.reset();
      http_work.reset();
      std::this_thread::sleep_for(50ms);
      ioc.stop();
      http_ioc.stop();
    });
  });

  std::thread http_thread([&] { http_ioc.run(); });
  std::vector<std::thread> io_threads;
  for (uint32_t i = 1; i < s.pipeline.io_threads; ++i) io_threads.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : io_threads) t.join();
  http_thread.join();
  if (shutdown_thread.joinable()) shutdown_thread.join();
  spdlog::info("stopped");
  return 0;
}

}  // namespace evpipe::app
