#include "read/stream/stream_hub.h"

#include <spdlog/spdlog.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "io/postgres/pg_connection.h"
#include "read/table_reader.h"
#include "stages/topic_filter.h"

namespace evpipe::read {

bool stream_filter::matches(std::string_view topic, std::string_view kind, std::string_view row_tenant) const {
  if (tenant && *tenant != row_tenant) return false;
  if (!kinds.empty() && std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) return false;
  if (topics.empty()) return true;
  for (const auto& f : topics) {
    if (stages::topic_matches(f, topic)) return true;
  }
  return false;
}

// A client as the hub thread sees it. Owned by that thread once added.
struct stream_hub::client_state {
  uint64_t id = 0;
  std::shared_ptr<stream_client> client;
  stream_filter filter;
  stream_since since;
  bool started = false;   // since resolved
  bool live = false;      // at the tail: fed by the fan-out; else caught up from the table
  position pos;           // everything up to here was handed to the client (or did not match)
  std::string since_time; // catch-up only: the first catch-up's time bound
  bool dead = false;      // given up after on_error()
};

stream_hub::stream_hub(stream_hub_options o) : opts_(std::move(o)) {}

stream_hub::~stream_hub() { stop(); }

void stream_hub::start() { thread_ = std::thread([this] { run(); }); }

void stream_hub::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t stream_hub::add(std::shared_ptr<stream_client> c, stream_filter f, stream_since since) {
  auto s = std::make_shared<client_state>();
  s->client = std::move(c);
  s->filter = std::move(f);
  s->since = std::move(since);
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = s->id = next_id_++;
    pending_.push_back(std::move(s));
  }
  probe_.clients.fetch_add(1, std::memory_order_relaxed);
  wake_.notify_all();
  return id;
}

void stream_hub::remove(uint64_t id) {
  {
    std::lock_guard lock(mu_);
    removed_.push_back(id);
  }
  probe_.clients.fetch_sub(1, std::memory_order_relaxed);
}

void lower_stream_thread_priority() noexcept {
  // Relative to the thread's current nice value; a failure (a sandbox that
  // forbids it) leaves the thread as it was.
  errno = 0;
  int now = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
  if (errno == 0) (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), std::min(now + stream_thread_nice, 19));
}

void stream_hub::note_commit(int64_t commit_ns) {
  if (probe_.clients.load(std::memory_order_relaxed) <= 0) return;  // no one listens: no read to wake
  {
    std::lock_guard lock(mu_);
    if (earliest_commit_ns_ == 0) earliest_commit_ns_ = commit_ns;
  }
  wake_.notify_all();
}

std::string_view disconnect_reason_name(disconnect_reason r) noexcept {
  switch (r) {
    case disconnect_reason::client_closed: return "client_closed";
    case disconnect_reason::heartbeat_missed: return "heartbeat_missed";
    case disconnect_reason::stream_error: return "stream_error";
    case disconnect_reason::shutdown: return "shutdown";
    case disconnect_reason::count_: break;
  }
  return "unknown";
}

std::string render_stream_metrics(const stream_probe& p, const std::string& prefix) {
  std::string out;
  auto one = [&](const char* name, const char* type, const char* help, const std::string& value) {
    std::string full = prefix + "_stream_" + name;
    out += "# HELP " + full + " " + help + "\n# TYPE " + full + " " + type + "\n" + full + " " + value + "\n";
  };
  auto u = [](uint64_t v) { return std::to_string(v); };
  one("clients", "gauge", "Stream subscriptions (SSE clients and subscribed WebSocket clients).",
      std::to_string(p.clients.load(std::memory_order_relaxed)));
  one("events_delivered_total", "counter", "Events handed to stream clients.",
      u(p.events_delivered.load(std::memory_order_relaxed)));
  one("catch_ups_total", "counter", "Clients read from the table (a past since, or fallen behind).",
      u(p.catch_ups.load(std::memory_order_relaxed)));
  one("fell_behind_total", "counter", "Live clients moved back to catch-up: send buffer over max_client_buffer_bytes.",
      u(p.fell_behind.load(std::memory_order_relaxed)));
  one("read_errors_total", "counter", "Failed reads of events_mirror by the stream.",
      u(p.read_errors.load(std::memory_order_relaxed)));
  char age[32];
  std::snprintf(age, sizeof age, "%.3f", p.horizon_age_s.load(std::memory_order_relaxed));
  one("horizon_age_seconds", "gauge",
      "Age of the oldest open transaction that has written: readers wait for it (sampled while clients listen).", age);
  std::string name = prefix + "_stream_disconnects_total";
  out += "# HELP " + name + " Stream client connections ended, by reason.\n# TYPE " + name + " counter\n";
  for (size_t i = 0; i < p.disconnects.size(); ++i) {
    out += name + "{reason=\"" + std::string(disconnect_reason_name(static_cast<disconnect_reason>(i))) + "\"} " +
           u(p.disconnects[i].load(std::memory_order_relaxed)) + "\n";
  }
  pipeline::render_histogram_family(
      out, prefix + "_stream_commit_to_send_seconds",
      "Live events: from the commit that made the row readable to its write to the client's socket.",
      p.commit_to_send.read());
  return out;
}

void stream_hub::run() {
  lower_stream_thread_priority();
  std::vector<std::shared_ptr<client_state>> clients;
  io::pg_connection conn;
  std::unique_ptr<table_reader> reader;
  position tail;
  bool tail_known = false;
  auto backoff = std::chrono::milliseconds(100);
  auto next_horizon_sample = std::chrono::steady_clock::now();
  // The commit the next tail rows are timed from (stream_probe::commit_to_send):
  // the earliest own commit noted and not yet followed by a read that found
  // rows (a read can find none while another transaction holds the horizon).
  int64_t commit_ns = 0;
  int64_t previous_read_ns = 0;
  // While a noted commit has not shown up (another transaction, of any
  // writer in the cluster, holds the horizon below it), the tail looks again
  // after this long, doubling up to 50 ms (or poll_ms if shorter): that
  // transaction is usually a batch a few milliseconds from its commit, and
  // one indexed read per 50 ms while it lasts costs little.
  auto recheck = std::chrono::milliseconds(1);

  for (;;) {
    {
      std::unique_lock lock(mu_);
      // Woken by a new client, a shard's commit (note_commit) or the poll,
      // which finds the rows of other processes and writers.
      auto poll = std::chrono::milliseconds(opts_.poll_ms);
      wake_.wait_for(lock, commit_ns != 0 ? std::min(recheck, poll) : poll,
                     [&] { return stopping_ || !pending_.empty() || earliest_commit_ns_ != 0; });
      if (stopping_) return;
      if (earliest_commit_ns_ != 0 && (commit_ns == 0 || earliest_commit_ns_ < commit_ns)) {
        commit_ns = earliest_commit_ns_;
      }
      earliest_commit_ns_ = 0;
      for (auto& p : pending_) clients.push_back(std::move(p));
      pending_.clear();
      for (uint64_t id : removed_) {
        std::erase_if(clients, [id](const auto& c) { return c->id == id; });
      }
      removed_.clear();
    }
    if (clients.empty()) {
      // No one listens: hold no connection and no position.
      if (reader) {
        reader.reset();
        conn.close();
      }
      tail_known = false;
      commit_ns = 0;
      continue;
    }
    if (!reader) {
      auto st = conn.connect(opts_.dsn, "evpipe-stream");
      std::string problem = st.ok ? "" : st.message;
      if (st.ok) {
        reader = std::make_unique<table_reader>(conn, opts_.schema);
        problem = reader->check();
      }
      if (!problem.empty()) {
        probe_.read_errors.fetch_add(1, std::memory_order_relaxed);
        spdlog::warn("stream: cannot read events_mirror: {}; retrying", problem);
        reader.reset();
        conn.close();
        std::this_thread::sleep_for(backoff);
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
        continue;
      }
      backoff = std::chrono::milliseconds(100);
    }
    auto failed = [&](const io::pg_status& st) {
      probe_.read_errors.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("stream: reading events_mirror failed: {}", st.message);
      if (!conn.connected() || st.connection_lost || PQstatus(conn.raw()) != CONNECTION_OK) {
        reader.reset();
        conn.close();
      }
    };
    if (!tail_known) {
      // Rows past the live edge committed after this moment, at the earliest
      // (the first tail read's rows are timed from it when no commit was noted).
      previous_read_ns =
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
      if (auto st = reader->live_edge(tail); !st.ok) {
        failed(st);
        continue;
      }
      tail_known = true;
    }

    // New clients: where they start.
    for (auto& c : clients) {
      if (c->started) continue;
      c->started = true;
      switch (c->since.what) {
        case stream_since::kind::now:
          c->pos = tail;
          c->live = true;
          c->client->on_caught_up(tail);
          break;
        case stream_since::kind::after_position:
          c->pos = c->since.pos;
          probe_.catch_ups.fetch_add(1, std::memory_order_relaxed);
          break;
        case stream_since::kind::from_time:
          c->pos = position::start();
          c->since_time = c->since.time;
          probe_.catch_ups.fetch_add(1, std::memory_order_relaxed);
          break;
      }
    }

    // What holds the horizon back, once a second.
    if (auto now = std::chrono::steady_clock::now(); now >= next_horizon_sample) {
      next_horizon_sample = now + std::chrono::seconds(1);
      horizon_state h;
      if (read_horizon(conn, h).ok) probe_.horizon_age_s.store(h.oldest_pid ? h.oldest_age_s : 0, std::memory_order_relaxed);
    }

    // The tail: rows past it, to every live client whose filter matches.
    read_window tw;
    tw.after = tail;
    tw.limit = opts_.tail_page;
    position before = tail;
    const int64_t read_started_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
    // Rows found without an own commit noted were committed by another
    // writer after the previous read began, at the earliest (later, if an
    // open transaction held the horizon back: then this undercounts).
    const int64_t rows_commit_ns = commit_ns != 0 ? commit_ns : previous_read_ns;
    auto st = reader->read(tw, [&](const event_row& r) {
      for (auto& c : clients) {
        if (!c->live || !c->filter.matches(r.topic, r.kind, r.tenant)) continue;
        if (c->client->queued_bytes() > opts_.max_client_buffer_bytes) {
          // Falls behind: back to the table from the last row it was given.
          c->live = false;
          c->pos = before;
          probe_.fell_behind.fetch_add(1, std::memory_order_relaxed);
          spdlog::debug("stream: client {} fell behind (over max_client_buffer_bytes): catching it up from the table", c->id);
          probe_.catch_ups.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        c->client->on_event(r.pos, r.topic, r.payload, rows_commit_ns);
        probe_.events_delivered.fetch_add(1, std::memory_order_relaxed);
      }
      before = r.pos;
      return row_action::next;
    });
    if (!st.ok) {
      // Rows handed out before the failure count: the tail moves to the last
      // one, so nobody gets them twice.
      tail = before;
      for (auto& c : clients) {
        if (c->live) c->pos = tail;
      }
      failed(st);
      continue;
    }
    // Rows came: the commits noted so far are accounted for. (None came:
    // the noted commit waits behind the horizon; keep timing from it.)
    if (before != tail || commit_ns == 0) {
      commit_ns = 0;
      recheck = std::chrono::milliseconds(1);
    } else {
      recheck = std::min(recheck * 2, std::chrono::milliseconds(50));
    }
    previous_read_ns = read_started_ns;
    tail = before;
    for (auto& c : clients) {
      if (c->live) c->pos = tail;
    }

    // Catch-up: each client behind the tail reads its next page from the
    // table, bounded by the tail, while its buffer has room.
    for (auto& c : clients) {
      if (c->live || !c->started || c->dead) continue;
      if (c->client->queued_bytes() > opts_.max_client_buffer_bytes / 2) continue;
      read_window w;
      w.after = c->pos;
      w.until = tail;
      w.topic_filters = c->filter.topics;
      w.kinds = c->filter.kinds;
      w.tenant = c->filter.tenant;
      w.since_time = c->since_time;
      w.limit = opts_.catch_up_page;
      uint32_t rows = 0;
      position last = c->pos;
      auto cst = reader->read(w, [&](const event_row& r) {
        c->client->on_event(r.pos, r.topic, r.payload, 0);
        probe_.events_delivered.fetch_add(1, std::memory_order_relaxed);
        last = r.pos;
        ++rows;
        return row_action::next;
      });
      c->pos = last;
      if (!cst.ok) {
        if (cst.sqlstate.rfind("22", 0) == 0) {
          // The client's own input (a time PostgreSQL does not take).
          c->client->on_error("cannot read from there: " + cst.message);
          c->dead = true;
          continue;
        }
        failed(cst);
        break;
      }
      if (rows < opts_.catch_up_page) {
        // Everything up to the tail was handed over: live from here.
        c->pos = tail;
        c->live = true;
        c->since_time.clear();
        c->client->on_caught_up(tail);
      }
    }
    std::erase_if(clients, [](const auto& c) { return c->dead; });
  }
}

}  // namespace evpipe::read
