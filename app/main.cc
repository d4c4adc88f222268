// evpipe: command line entry point.
//   evpipe run --config FILE          ingest until SIGINT/SIGTERM
//   evpipe check-config --config FILE print the effective configuration
//   evpipe migrate --config FILE      create or update the tables

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "app/daemon.h"
#include "config/config.h"
#include "io/sources/mqtt/mqtt_source.h"

namespace {

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("evpipe");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"evpipe: ingest JSON events into PostgreSQL (events_mirror, dlq_events)"};
  cli.require_subcommand(1);
  cli.set_version_flag("--version", "evpipe 0.1.0");

  std::string config_path;
  auto* run = cli.add_subcommand("run", "Ingest events until SIGINT/SIGTERM, then drain and exit 0");
  run->add_option("-c,--config", config_path, "TOML configuration file (see config/evpipe.toml)")->required();
  auto* check = cli.add_subcommand("check-config", "Validate a configuration and print the effective settings");
  check->add_option("-c,--config", config_path, "TOML configuration file")->required();
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
  if (*check) {
    std::cout << evpipe::config::to_toml(settings);
    for (const auto& m : settings.mqtt_sources) {
      for (const auto& w : evpipe::io::mqtt_config_warnings(m)) std::cerr << "evpipe: warning: " << w << "\n";
    }
    return 0;
  }
  setup_logging(settings.log.level);
  if (*migrate) return evpipe::app::migrate(settings);
  if (settings.tcp_sources.empty() && settings.mqtt_sources.empty() && settings.http_sources.empty()) {
    spdlog::error("no sources configured: add a [[sources.tcp]], [[sources.mqtt]] or [[sources.http]] section (see config/evpipe.toml)");
    return 2;
  }
  return evpipe::app::run_daemon(settings);
}
