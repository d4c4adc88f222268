// evpipe: command line entry point.
//   evpipe run --config FILE          ingest until SIGINT/SIGTERM
//   evpipe check-config --config FILE print the effective configuration
//   evpipe migrate --config FILE      create or update the tables
//   evpipe top [--url URL | --config FILE]  live view of a running evpipe's /metrics
//   evpipe replay --config FILE ...   committed events back out, in position order (read/replay)
//   evpipe dlq list|show|requeue|purge ...  the dead letters (read/dlq)

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <strings.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#ifdef EVPIPE_WITH_MIMALLOC
#include <mimalloc.h>
#endif

#include "app/daemon.h"
#include "app/huge_pages.h"
#include "stages/huge_pages.h"
#include "app/process.h"
#include "app/version.h"
#include "config/config.h"
#include "io/sources/mqtt/mqtt_source.h"
#include "top/top_main.h"
#include "io/sources/mqtt/mqtt_subscription_memory.h"
#include "io/postgres/route_check.h"
#include "stages/route/route_set.h"
#include "stages/schema/compile.h"
#include "stages/schema/schema_set.h"
#include "read/dlq/dlq_commands.h"
#include "read/replay/replay.h"

namespace {

// mimalloc gives memory that stayed free for 25 ms back to the kernel
// (MADV_DONTNEED). An event's memory is allocated by the io thread when it
// is read and freed by its shard after the commit, often hundreds of ms
// later under load, so the pages went back and were faulted in again: 0.12
// page faults an event in steady state, a third of evpipe's CPU per event
// on the bulk path (docs/performance-cpu.md). Memory now stays
// 10 s: a busy evpipe keeps its working set, and a burst's memory goes back
// 10 s after it. MIMALLOC_DECOMMIT_DELAY in the environment still decides.
//
// evpipe also asks for transparent huge pages (app/huge_pages.h decides):
// mimalloc's large_os_pages (MADV_HUGEPAGE on each new segment; mimalloc
// then keeps those segments resident, so the decommit delay applies only to
// the memory mapped before main()), the mappings made before main() advised,
// and the stages' large buffers (stages/huge_pages.h). A page fault then maps
// 2 MiB instead of 4 KiB, and the TLB covers the event buffers with far fewer
// entries: on the bulk path 2,650 -> 1,400 ns of CPU an event on a fresh
// process, 1,500 -> 1,100 in steady state (docs/performance-cpu.md,
// "Transparent huge pages"). A new thread's first segment stays without the
// hint (mimalloc's eager_commit_delay is left alone): with it, each stream
// client's session thread held 2 MiB more (evpipe's RSS with 100 clients
// 365 MB against 164), for no CPU measurable on the bulk path.
// MIMALLOC_LARGE_OS_PAGES in the environment decides instead (0 turns it all off).
#ifdef EVPIPE_WITH_MIMALLOC
bool environment_sets(std::string_view name) {
  // mimalloc reads its options without regard to case.
  for (char** e = environ; *e != nullptr; ++e)
    if (::strncasecmp(*e, name.data(), name.size()) == 0 && (*e)[name.size()] == '=') return true;
  return false;
}

std::string huge_pages_why;
#endif

void tune_allocator() {
#ifdef EVPIPE_WITH_MIMALLOC
  constexpr long decommit_delay_ms = 10'000;
  if (!environment_sets("MIMALLOC_DECOMMIT_DELAY")) mi_option_set(mi_option_decommit_delay, decommit_delay_ms);
  if (environment_sets("MIMALLOC_LARGE_OS_PAGES")) {
    huge_pages_why = "MIMALLOC_LARGE_OS_PAGES in the environment";
  } else {
    const auto choice = evpipe::app::choose_huge_pages();
    mi_option_set_enabled(mi_option_large_os_pages, choice.on);
    huge_pages_why = choice.why;
  }
  const bool huge = mi_option_is_enabled(mi_option_large_os_pages);
  evpipe::stages::set_huge_pages(huge);
  if (!huge) return;
  constexpr std::size_t mib = std::size_t{1} << 20;
  (void)evpipe::app::advise_huge_pages_on_heap_mappings(4 * mib, 1024 * mib);
#endif
}

std::string version_text() {
  std::string out = evpipe::app::version_text();
#ifdef EVPIPE_WITH_MIMALLOC
  out += "\nallocator: mimalloc, freed memory kept " + std::to_string(mi_option_get(mi_option_decommit_delay)) +
         " ms (MIMALLOC_DECOMMIT_DELAY), transparent huge pages " +
         (mi_option_is_enabled(mi_option_large_os_pages) ? "on" : "off") + ": " + huge_pages_why +
         " (MIMALLOC_LARGE_OS_PAGES)";
#endif
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  evpipe::app::harden_process();
  tune_allocator();
  CLI::App cli{"evpipe: ingest JSON events into PostgreSQL (events_mirror, dlq_events)"};
  cli.require_subcommand(1);
  cli.set_version_flag("--version", version_text);

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

  evpipe::top::top_options top_opts;
  std::string top_url;
  auto* top = cli.add_subcommand("top", "Live view of a running evpipe's /metrics, refreshed every second (q quits)");
  top->add_option("--url", top_url, "its /metrics, e.g. http://127.0.0.1:9464/metrics (default: from --config)");
  top->add_option("-c,--config", config_path, "the TOML configuration evpipe runs with ([http] listen, [metrics] prefix)");
  top->add_option("--prefix", top_opts.prefix, "metric name prefix ([metrics] prefix)");
  evpipe::read::replay_options replay_opts;
  auto* replay = cli.add_subcommand("replay", "Print committed events as NDJSON in position order, or send them to an "
                                              "evpipe source; the last position goes to stderr at the end");
  replay->add_option("-c,--config", config_path, "TOML configuration file")->required();
  replay->add_option("--since", replay_opts.since,
                     "after this position, or from this time (ISO 8601); twice, a position and a time: both "
                     "(resumes a window from its last position)")
      ->allow_extra_args(false);
  replay->add_option("--until", replay_opts.until, "up to this position, or before this time (ISO 8601)");
  replay->add_option("--topic", replay_opts.topics, "MQTT-style topic filter (repeatable; any of them)");
  replay->add_option("--kind", replay_opts.kinds, "event kind (repeatable; any of them)");
  replay->add_option("--tenant", replay_opts.tenant, "only this tenant's events (docs/tenants.md)");
  replay->add_option("--to", replay_opts.to, "stdout (NDJSON), tcp://host:port (an evpipe TCP source), "
                                            "mqtt://host:port[/topic-prefix] (QoS 1 through a broker, on each "
                                            "event's topic) or http://host:port/v1/events (an evpipe HTTP source)");
  replay->add_option("--rate", replay_opts.rate, "events per second at most (default: as fast as possible)");
  replay->add_option("--max-rows", replay_opts.max_rows, "stop after this many events (continue from the last position)");
  replay->add_flag("!--no-progress", replay_opts.progress, "no progress line on stderr");
  replay->add_option("--mqtt-credentials-file", replay_opts.mqtt_credentials_file,
                     "--to mqtt://: a file with the user name (first line) and password (second line)");
  replay->add_option("--bearer-token-file", replay_opts.bearer_token_file,
                     "--to http://: a file with the bearer token (first line)");

  evpipe::read::dlq_options dlq_opts;
  auto* dlq = cli.add_subcommand("dlq", "Inspect and delete dead letters (dlq_events)");
  dlq->require_subcommand(1);
  auto dlq_filters = [&](CLI::App* sub) {
    sub->add_option("-c,--config", config_path, "TOML configuration file")->required();
    sub->add_option("--reason", dlq_opts.reasons, "reason code, e.g. invalid_json (repeatable; any of them)");
    sub->add_option("--topic", dlq_opts.topics, "MQTT-style filter on the original topic (repeatable)");
    sub->add_option("--since", dlq_opts.since, "created at or after this time (ISO 8601)");
    sub->add_option("--until", dlq_opts.until, "created before this time (ISO 8601)");
    sub->add_option("--tenant", dlq_opts.tenant, "only this tenant's dead letters (docs/tenants.md)");
  };
  auto* dlq_list = dlq->add_subcommand("list", "The newest dead letters as a table (or --json lines)");
  dlq_filters(dlq_list);
  dlq_list->add_flag("--json", dlq_opts.json, "one JSON object per line");
  dlq_list->add_option("--limit", dlq_opts.limit, "at most this many, newest first (0: all; default 100)");
  auto* dlq_show = dlq->add_subcommand("show", "One dead letter in full");
  dlq_show->add_option("-c,--config", config_path, "TOML configuration file")->required();
  dlq_show->add_option("id", dlq_opts.id, "its id (from list)")->required();
  dlq_show->add_flag("--json", dlq_opts.json, "one line of JSON");
  auto* dlq_purge = dlq->add_subcommand("purge", "Delete the dead letters the filters select (asks unless --yes)");
  dlq_filters(dlq_purge);
  dlq_purge->add_flag("--dry-run", dlq_opts.dry_run, "count them, delete nothing");
  dlq_purge->add_flag("-y,--yes", dlq_opts.yes, "do not ask for confirmation");
  auto* dlq_requeue = dlq->add_subcommand("requeue", "Send the dead letters the filters select through validation and "
                                                     "the write again; each leaves dlq_events in the transaction that "
                                                     "commits its new outcome");
  dlq_filters(dlq_requeue);
  dlq_requeue->add_flag("--dry-run", dlq_opts.dry_run, "validate them and say what would happen, change nothing");

  CLI11_PARSE(cli, argc, argv);

  if (*top) {
    if (!config_path.empty()) {
      try {
        auto s = evpipe::config::load_file(config_path);
        if (top->count("--prefix") == 0) top_opts.prefix = s.metrics.prefix;
        if (top_url.empty()) {
          if (s.http.listen.empty()) {
            std::cerr << "evpipe top: [http] listen is empty in " << config_path << ": give --url\n";
            return 2;
          }
          // A wildcard listen address is reached on loopback.
          auto ep = evpipe::config::parse_listen(s.http.listen, "[http] listen");
          std::string host = ep.host == "0.0.0.0" ? "127.0.0.1" : ep.host == "::" ? "::1" : ep.host;
          if (host.find(':') != std::string::npos) host = "[" + host + "]";
          top_url = "http://" + host + ":" + std::to_string(ep.port) + "/metrics";
        }
      } catch (const evpipe::config::config_error& e) {
        std::cerr << "evpipe: config error: " << e.what() << "\n";
        return 2;
      }
    }
    if (!top_url.empty()) top_opts.url = top_url;
    return evpipe::top::run_top(top_opts);
  }

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
    if (settings.schemas.enabled) {
      // The payload schemas compile as `run` would compile them (docs/schemas.md).
      try {
        (void)evpipe::stages::schema::schema_set::load({settings.schemas.dir, settings.schemas.version_path,
                                                  settings.schemas.unknown_version == "dead_letter"});
      } catch (const evpipe::stages::schema::schema_error& e) {
        std::cerr << "evpipe: schema error: " << e.what() << "\n";
        return 2;
      }
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
    // Client ids of this host that the config no longer uses: only known when
    // the database answers (a note says so when it does not).
    for (const auto& w : evpipe::io::mqtt_sessions_left_behind(settings)) std::cerr << "evpipe: warning: " << w << "\n";
    return 0;
  }
  if (*replay) return evpipe::read::run_replay(settings, replay_opts);
  if (*dlq_list) return evpipe::read::run_dlq_list(settings, dlq_opts);
  if (*dlq_show) return evpipe::read::run_dlq_show(settings, dlq_opts);
  if (*dlq_purge) return evpipe::read::run_dlq_purge(settings, dlq_opts);
  if (*dlq_requeue) {
    evpipe::app::setup_logging(settings.log.level, settings.log.format);  // the shards' warnings
    return evpipe::read::run_dlq_requeue(settings, dlq_opts);
  }
  evpipe::app::setup_logging(settings.log.level, settings.log.format);
  using evpipe::app::exit_mode;
  if (*migrate) evpipe::app::exit_process(evpipe::app::migrate(settings), exit_mode::unwind);
  evpipe::app::run_hooks hooks;
  hooks.config_path = config_path;
  evpipe::app::exit_process(evpipe::app::run_daemon(settings, hooks), exit_mode::unwind);
}
