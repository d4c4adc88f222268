#include "read/replay/replay.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "io/postgres/pg_connection.h"
#include "read/replay/replay_output.h"
#include "read/table_reader.h"
#include "stages/topic_filter.h"

namespace evpipe::read {

namespace {

using clock_type = std::chrono::steady_clock;

std::atomic<int> interrupted{0};
extern "C" void on_interrupt(int sig) { interrupted.store(sig); }

// A bound of the window: a position, or a time PostgreSQL parses. Returns ""
// or what is wrong with it.
std::string parse_bound(io::pg_connection& conn, const std::string& flag, const std::string& text,
                        std::optional<position>& pos, std::string& time) {
  if (text.empty()) return "";
  if (auto p = decode(text)) {
    pos = p;
    return "";
  }
  io::pg_result r;
  const char* params[1] = {text.c_str()};
  if (!conn.query_params("SELECT $1::timestamptz", 1, params, r).ok) {
    return flag + " " + text + ": neither a position (as replay prints it) nor a time (ISO 8601, e.g. 2025-01-15T10:30:00Z)";
  }
  time = text;
  return "";
}

void print_progress(uint64_t rows, double seconds, uint64_t estimate, bool final) {
  double rate = seconds > 0 ? static_cast<double>(rows) / seconds : 0;
  if (final) {
    std::fprintf(stderr, "replay: %llu rows in %.1f s (%.0f rows/s)\n", static_cast<unsigned long long>(rows),
                 seconds, rate);
    return;
  }
  if (estimate > rows && rate > 0) {
    std::fprintf(stderr, "replay: %llu rows, %.0f rows/s, ETA %.0f s (about %llu rows)\n",
                 static_cast<unsigned long long>(rows), rate, static_cast<double>(estimate - rows) / rate,
                 static_cast<unsigned long long>(estimate));
  } else {
    std::fprintf(stderr, "replay: %llu rows, %.0f rows/s\n", static_cast<unsigned long long>(rows), rate);
  }
}

// The target's secrets from their files; "" or what is wrong (never the
// secret itself).
std::string read_target_secrets(const replay_options& o, wire_target& to) {
  const bool mqtt = to.target.kind == load::target_kind::mqtt, http = to.target.kind == load::target_kind::http;
  if (!o.mqtt_credentials_file.empty()) {
    if (!mqtt) return "--mqtt-credentials-file goes with --to mqtt://";
    mqtt_credentials c;
    if (auto problem = read_mqtt_credentials(o.mqtt_credentials_file, c); !problem.empty()) {
      return "--mqtt-credentials-file: " + problem;
    }
    to.mqtt_login = std::move(c);
  }
  if (!o.bearer_token_file.empty()) {
    if (!http) return "--bearer-token-file goes with --to http://";
    if (auto problem = read_secret_file(o.bearer_token_file, to.bearer_token); !problem.empty()) {
      return "--bearer-token-file: " + problem;
    }
  }
  return "";
}

}  // namespace

int run_replay(const config::settings& s, const replay_options& o) {
  for (const auto& f : o.topics) {
    if (auto problem = stages::topic_filter_problem(f); !problem.empty()) {
      std::fprintf(stderr, "evpipe replay: --topic %s: %s\n", f.c_str(), problem.c_str());
      return 2;
    }
  }
  if (o.rate < 0) {
    std::fprintf(stderr, "evpipe replay: --rate must be positive\n");
    return 2;
  }
  io::pg_connection conn;
  if (auto st = conn.connect(s.postgres.dsn, "evpipe-replay"); !st.ok) {
    std::fprintf(stderr, "evpipe replay: cannot connect to PostgreSQL: %s\n", st.message.c_str());
    return 1;
  }
  table_reader reader(conn, s.postgres.schema);
  if (auto problem = reader.check(); !problem.empty()) {
    std::fprintf(stderr, "evpipe replay: %s\n", problem.c_str());
    return 1;
  }
  read_window w;
  std::optional<position> since_pos;
  if (o.since.size() > 2) {
    std::fprintf(stderr, "evpipe replay: --since: at most twice, a position and a time\n");
    return 2;
  }
  for (const auto& text : o.since) {
    std::optional<position> pos;
    std::string time;
    if (auto problem = parse_bound(conn, "--since", text, pos, time); !problem.empty()) {
      std::fprintf(stderr, "evpipe replay: %s\n", problem.c_str());
      return 2;
    }
    if ((pos && since_pos) || (!time.empty() && !w.since_time.empty())) {
      std::fprintf(stderr, "evpipe replay: --since twice takes a position and a time, not two %s\n",
                   pos ? "positions" : "times");
      return 2;
    }
    if (pos) since_pos = pos;
    if (!time.empty()) w.since_time = time;
  }
  if (auto problem = parse_bound(conn, "--until", o.until, w.until, w.until_time); !problem.empty()) {
    std::fprintf(stderr, "evpipe replay: %s\n", problem.c_str());
    return 2;
  }
  // A position whose transaction id has not been handed out yet is from
  // another cluster (or from before a restore): refused, not read as "nothing
  // yet".
  for (const auto& [flag, pos] : {std::pair{"--since", since_pos}, std::pair{"--until", w.until}}) {
    horizon_state h;
    if (pos && pos->tx != 0 && read_horizon(conn, h).ok && pos->tx >= h.next_tx) {
      std::fprintf(stderr, "evpipe replay: %s %s: unknown position: no transaction of this database has that id\n",
                   flag, encode(*pos).c_str());
      return 2;
    }
  }
  if (since_pos) w.after = *since_pos;
  if (!o.topics.empty() || !o.kinds.empty()) w.any_of = {row_clause{o.topics, o.kinds}};
  w.tenant = o.tenant;
  w.limit = o.max_rows;

  std::unique_ptr<replay_output> out;
  if (o.to == "stdout") {
    if (!o.mqtt_credentials_file.empty() || !o.bearer_token_file.empty()) {
      std::fprintf(stderr, "evpipe replay: --mqtt-credentials-file and --bearer-token-file go with --to mqtt:// and http://\n");
      return 2;
    }
    out = make_stdout_output();
  } else {
    wire_target to;
    if (auto problem = parse_wire_target(o.to, to); !problem.empty()) {
      std::fprintf(stderr, "evpipe replay: %s\n", problem.c_str());
      return 2;
    }
    if (auto problem = read_target_secrets(o, to); !problem.empty()) {
      std::fprintf(stderr, "evpipe replay: %s\n", problem.c_str());
      return 2;
    }
    // TCP: below the source's default max_unacked (65536). MQTT: what the
    // broker has not yet acknowledged. HTTP: one request in flight.
    out = make_wire_output(to, to.target.kind == load::target_kind::mqtt ? 10000 : 32768);
    if (!out->last_error().empty()) {
      std::fprintf(stderr, "evpipe replay: %s\n", out->last_error().c_str());
      return 1;
    }
  }

  // SIGINT/SIGTERM stop the read after the current row; the last position is
  // printed as on a normal end.
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  uint64_t estimate = o.progress ? reader.estimate_rows(w) : 0;
  if (o.max_rows && estimate > o.max_rows) estimate = o.max_rows;
  const auto t0 = clock_type::now();
  auto next_progress = t0 + std::chrono::seconds(1);
  uint64_t rows = 0;
  bool output_failed = false;
  // Rows after --since that retention dropped: said, not skipped in silence;
  // checked in one transaction with the read, so no drop lands in between.
  std::vector<table_reader::drop_record> gone;
  if (auto st = reader.begin_drop_guard(since_pos.value_or(position::start()), 0, gone); !st.ok) {
    std::fprintf(stderr, "evpipe replay: cannot read what retention dropped: %s\n", st.message.c_str());
    return 1;
  }
  if (since_pos && since_pos->tx != 0 && !gone.empty()) {
    reader.end_drop_guard();
    std::fprintf(stderr, "evpipe replay: --since: %s\n", describe_dropped(*since_pos, gone).c_str());
    return 2;
  }
  auto st = reader.read(w, [&](const event_row& r) {
    if (o.rate > 0) {
      // Open loop: row i is due at t0 + i / rate.
      auto due = t0 + std::chrono::duration_cast<clock_type::duration>(
                          std::chrono::duration<double>(static_cast<double>(rows) / o.rate));
      if (due > clock_type::now()) {
        if (!out->flush()) {
          output_failed = true;
          return row_action::stop;
        }
        std::this_thread::sleep_until(due);
      }
    }
    if (!out->write(r)) {
      output_failed = true;
      return row_action::stop;
    }
    ++rows;
    if (o.progress && (rows & 1023) == 0) {
      auto now = clock_type::now();
      if (now >= next_progress) {
        print_progress(rows, std::chrono::duration<double>(now - t0).count(), estimate, false);
        next_progress = now + std::chrono::seconds(1);
      }
    }
    return interrupted.load() ? row_action::stop : row_action::next;
  });
  reader.end_drop_guard();
  if (!output_failed && !out->finish()) output_failed = true;
  double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  if (o.progress) print_progress(rows, seconds, estimate, true);
  if (auto caveat = out->caveat(); !caveat.empty()) std::fprintf(stderr, "replay: %s\n", caveat.c_str());

  // Where to go on from: the last event that arrived, else where this
  // replay started (nothing new arrived).
  std::optional<position> last = out->done_position();
  if (!last) last = since_pos;
  if (!last && w.since_time.empty()) last = position::start();
  if (last) {
    std::fprintf(stderr, "last position: %s\n", encode(*last).c_str());
    // The position alone would drop the window's start time: rows created
    // before it that commit after the position (a long transaction, another
    // writer's backfill) would come back in.
    if (!w.since_time.empty()) {
      // Quoted for a shell: a time may hold spaces ("2025-01-03 00:00:00+00").
      std::string quoted = "'";
      for (char ch : w.since_time) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
      quoted += "'";
      std::fprintf(stderr, "resume this window with: --since %s --since %s\n", encode(*last).c_str(), quoted.c_str());
    }
  } else {
    std::fprintf(stderr, "last position: none (no rows since %s)\n", w.since_time.c_str());
  }
  if (!st.ok) {
    std::fprintf(stderr, "evpipe replay: reading events_mirror failed: %s\n", st.message.c_str());
    return 1;
  }
  if (output_failed) {
    std::fprintf(stderr, "evpipe replay: %s\n", out->last_error().c_str());
    return 1;
  }
  if (interrupted.load()) return 130;
  // Rows of transactions still running were left for the next replay: say
  // so when one has been running long enough to matter.
  horizon_state h;
  if (read_horizon(conn, h).ok && h.oldest_pid != 0 && h.oldest_age_s >= 5) {
    std::fprintf(stderr,
                 "replay: a transaction has been writing for %.0f s (pid %d, %s): rows committed after it started "
                 "wait until it ends; replay again from the last position to get them\n",
                 h.oldest_age_s, h.oldest_pid, h.oldest_application.empty() ? "no application_name" : h.oldest_application.c_str());
  }
  return 0;
}

}  // namespace evpipe::read
