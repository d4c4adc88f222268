// evpipe: command line entry point.
//   evpipe run --config FILE          ingest until SIGINT/SIGTERM
//   evpipe check-config --config FILE print the effective configuration
//   evpipe migrate --config FILE      create or update the tables

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <iostream>

#include "app/daemon.h"
#include "app/process.h"
#include "app/version.h"
#include "config/config.h"
#include "io/sources/mqtt/mqtt_source.h"
#include "io/postgres/route_check.h"
#include "stages/route/route_set.h"

int main(int argc, char** argv) {
  evpipe::app::harden_process();
  CLI::App cli{"evpipe: ingest JSON events into PostgreSQL (events_mirror, dlq_events)"};
  cli.require_subcommand(1);
  cli.set_version_flag("--version", evpipe::app::version_text);

  std::string config_path;
  auto* run = cli.add_subcommand("run", "Ingest events until SIGINT/SIGTERM, then drain and exit 0");
  run->add_option("-c,--config", config_path, "TOML configuration file (see config/evpipe.toml)")->required();
  auto* check = cli.add_subcommand("check-config", "Validate a configuration and print the effective settings");
  check->add_option("-c,--config", config_path, "TOML configuration file")->required();
  bool check_db = false;
  check->add_flag("--check-db", check_db,
                  "Also check the database: routed tables, column types, upsert keys' unique indexes");
  auto* migrate = cli.add_subcommand("migrate", "Create or update events_mirror and dlq_events (idempotent)");
  migrate->add_option("-c,--config", config_path, "TOML configuration file")->required();

  CLI11_PARSE(cli, argc, argv);

  evpipe::config::settings settings;
  try {
    settings = evpipe::config::load_file(config_path);
  } catch (const evpipe::config::config_error& e) {
    std::cerr << "evpipe: config error: " << e.what() << "\n";
    return 2;
  }
  // What `run` would refuse, check-config refuses too (migrate needs no source).
  if (*check || *run) {
    auto problems = evpipe::config::problems_for_run(settings);
    for (const auto& p : problems) std::cerr << "evpipe: config error: " << config_path << ": " << p << "\n";
    if (!problems.empty()) return 2;
  }
  if (*check) {
    try {
      // What only the compiled routes check (a default's value for its type).
      evpipe::stages::route::route_set routes(settings.routes);
    } catch (const evpipe::config::config_error& e) {
      std::cerr << "evpipe: config error: " << config_path << ": " << e.what() << "\n";
      return 2;
    }
    std::cout << evpipe::config::to_toml(settings);
    if (check_db) {
      evpipe::io::pg_connection conn;
      if (auto st = conn.connect(settings.postgres.dsn, "evpipe-check-config"); !st.ok) {
        std::cerr << "evpipe: cannot connect to PostgreSQL: " << st.message << "\n";
        return 1;
      }
      auto problems = evpipe::io::route_db_problems(conn, settings.routes, settings.postgres.schema);
      for (const auto& p : problems) std::cerr << "evpipe: database: " << p << "\n";
      if (!problems.empty()) return 2;
    }
    for (const auto& m : settings.mqtt_sources) {
      for (const auto& w : evpipe::io::mqtt_config_warnings(m)) std::cerr << "evpipe: warning: " << w << "\n";
    }
    return 0;
  }
  evpipe::app::setup_logging(settings.log.level, settings.log.format);
  using evpipe::app::exit_mode;
  if (*migrate) evpipe::app::exit_process(evpipe::app::migrate(settings), exit_mode::unwind);
  evpipe::app::exit_process(evpipe::app::run_daemon(settings), exit_mode::unwind);
}
