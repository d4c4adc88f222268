#include "read/stream/stream_hub.h"

#include <spdlog/spdlog.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "io/postgres/pg_connection.h"
#include "read/stream/stream_hub_client.h"
#include "read/table_reader.h"
#include "stages/topic_filter.h"

namespace evpipe::read {

bool stream_filter::matches(std::string_view topic, std::string_view kind, std::string_view row_tenant) const {
  if (tenant && *tenant != row_tenant) return false;
  if (any_of.empty()) return true;
  for (const auto& c : any_of) {
    if (c.matches(topic, kind)) return true;
  }
  return false;
}

stream_hub::stream_hub(stream_hub_options o) : opts_(std::move(o)) {}

stream_hub::~stream_hub() { stop(); }

void stream_hub::start() {
  // A writer may be a quarter of a client's limit behind the tail
  // (fanout_writers.h); one that takes what held the tail lets it read again.
  writers_ = std::make_unique<fanout_writers>(
      opts_.writer_threads != 0 ? opts_.writer_threads : fanout_writers::default_threads(),
      opts_.max_client_buffer_bytes / 4, [this] {
        std::lock_guard lock(mu_);
        wake_.notify_all();
      });
  thread_ = std::thread([this] { run(); });
}

void stream_hub::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  writers_.reset();
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

std::chrono::microseconds commit_read_spacing(size_t live_clients, uint32_t max_fanout_writes_per_s,
                                              uint32_t poll_ms) noexcept {
  if (max_fanout_writes_per_s == 0 || live_clients == 0) return std::chrono::microseconds(0);
  const uint64_t us = uint64_t(live_clients) * 1'000'000 / max_fanout_writes_per_s;
  return std::chrono::microseconds(std::min<uint64_t>(us, uint64_t(poll_ms) * 1000));
}

void stream_hub::note_commit(int64_t commit_ns) {
  if (probe_.clients.load(std::memory_order_relaxed) <= 0) return;  // no one listens: no read to wake
  {
    std::lock_guard lock(mu_);
    if (earliest_commit_ns_ == 0) earliest_commit_ns_ = commit_ns;
  }
  wake_.notify_all();
}

namespace {
int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void stream_hub::run() {
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
  // When the tail reads next (poll_ms, or the recheck, after its last read;
  // for a noted commit at once, or after the pacing: commit_read_at below).
  // Rounds in between only catch clients up: the tail does not move, so the
  // seam argument is unchanged.
  auto next_tail_read = std::chrono::steady_clock::now();
  bool held_by_writers = false;  // the tail was due and a writer's backlog held it (probe_.writer_waits)
  // When the last tail read that found rows began, and how many clients it
  // was handed to: a noted commit starts the next read no sooner than
  // commit_read_spacing() after it. Each such read costs a write and a
  // wake-up per client; on a machine short of CPU, reads on every commit
  // (some 1,000 a second at 20,000 events/s) made the fan-out's wake-ups,
  // not its bytes, the cost (docs/performance-read.md, "Pacing the reads").
  auto last_tail_read = std::chrono::steady_clock::time_point{};
  size_t live_at_last_read = 0;
  // What the previous round's catch-up left: clients behind with room in
  // their queue (read the next page at once, not at the next poll: a
  // catch-up is as fast as the reads and the client, docs/read.md), or only
  // clients whose queue is over half full (look again in a millisecond).
  enum class catching_up : uint8_t { none, ready, waiting_for_room } behind = catching_up::none;

  for (;;) {
    bool tail_due = false;
    {
      std::unique_lock lock(mu_);
      // Woken by a new client, a shard's commit (note_commit), the poll,
      // which finds the rows of other processes and writers, or a writer
      // that took what it was handed: the tail reads only so far ahead of
      // the writes (fanout_writers.h), and the commits noted while it waits
      // are read together.
      const auto commit_read_at =
          last_tail_read + commit_read_spacing(live_at_last_read, opts_.max_fanout_writes_per_s, opts_.poll_ms);
      auto due = [&] {
        const auto now = std::chrono::steady_clock::now();
        return (earliest_commit_ns_ != 0 && now >= commit_read_at) || now >= next_tail_read;
      };
      // A commit is noted, and its read waits for the spacing.
      auto spaced = [&] { return earliest_commit_ns_ != 0 && std::chrono::steady_clock::now() < commit_read_at; };
      auto tail_wanted = [&] { return due() && !writers_->backlog(); };
      auto until = next_tail_read;
      // The poll is due but a writer holds the tail: it wakes the hub when it
      // takes (on_taken); 50 ms is only a backstop.
      if (const auto now = std::chrono::steady_clock::now(); writers_->backlog() && until <= now) {
        until = now + std::chrono::milliseconds(50);
      }
      if (behind == catching_up::ready) until = std::chrono::steady_clock::now();
      if (behind == catching_up::waiting_for_room) {
        until = std::min(until, std::chrono::steady_clock::now() + std::chrono::milliseconds(1));
      }
      wake_.wait_until(lock, until, [&] { return stopping_ || !pending_.empty() || tail_wanted() || spaced(); });
      if (!stopping_ && pending_.empty() && !tail_wanted() && spaced()) {
        // (Not past `until`: a catch-up round or the poll keeps its time.)
        wake_.wait_until(lock, std::min(commit_read_at, until),
                         [&] { return stopping_ || !pending_.empty() || tail_wanted(); });
      }
      if (stopping_) return;
      if (earliest_commit_ns_ != 0 && (commit_ns == 0 || earliest_commit_ns_ < commit_ns)) {
        commit_ns = earliest_commit_ns_;
      }
      tail_due = tail_wanted();
      if (tail_due) earliest_commit_ns_ = 0;  // else kept for the read once the writers have taken the last
      // Counted once each time the writers start holding a due tail back.
      const bool held = !tail_due && writers_->backlog() && due();
      if (held && !held_by_writers) probe_.writer_waits.fetch_add(1, std::memory_order_relaxed);
      held_by_writers = held;
      for (auto& p : pending_) clients.push_back(std::move(p));
      pending_.clear();
      for (uint64_t id : removed_) {
        std::erase_if(clients, [id](const auto& c) { return c->id == id; });
      }
      removed_.clear();
    }
    behind = catching_up::none;  // until this round's catch-up says otherwise
    if (clients.empty()) {
      // No one listens: hold no connection and no position.
      if (reader) {
        reader.reset();
        conn.close();
      }
      tail_known = false;
      commit_ns = 0;
      // Asleep until a client comes (note_commit wakes no one while no
      // client listens), not poll_ms after poll_ms for nothing: an evpipe
      // without stream clients keeps this thread asleep (a day is the
      // longest wait, far below any clock's overflow).
      next_tail_read = std::chrono::steady_clock::now() + std::chrono::hours(24);
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
    // The tail read (or moved to the live edge) from a look begun at
    // `started_ns`. Rows came: the commits noted so far are accounted for.
    // (None came: the noted commit waits behind the horizon; keep timing
    // from it, and look again after `recheck`.)
    auto tail_moved = [&](position to, int64_t started_ns) {
      if (to != tail || commit_ns == 0) {
        commit_ns = 0;
        recheck = std::chrono::milliseconds(1);
      } else {
        recheck = std::min(recheck * 2, std::chrono::milliseconds(50));
        next_tail_read = std::min(next_tail_read, std::chrono::steady_clock::now() + recheck);
      }
      previous_read_ns = started_ns;
      tail = to;
    };
    if (!tail_known) {
      // Rows past the live edge committed after this moment, at the earliest
      // (the first tail read's rows are timed from it when no commit was noted).
      previous_read_ns = steady_now_ns();
      if (auto st = reader->live_edge(tail); !st.ok) {
        failed(st);
        continue;
      }
      tail_known = true;
      tail_due = true;
    }

    // New clients: where they start, and the newest retention drop then
    // (a drop after it that takes rows past a client's position while it
    // catches up is said: catch_up).
    int64_t drops_now = -1;
    for (auto& c : clients) {
      if (c->started) continue;
      if (drops_now < 0) {
        if (auto st = reader->newest_drop(drops_now); !st.ok) {
          // They start at a later round, once it can be read.
          spdlog::warn("stream: cannot read what retention dropped ({}); new clients wait", st.message);
          break;
        }
      }
      c->drops_seen = drops_now;
      c->started = true;
      switch (c->since.what) {
        case stream_since::kind::now:
          c->pos = tail;
          c->live = true;
          c->client->on_caught_up(tail);
          break;
        case stream_since::kind::after_position: {
          // A position whose transaction id has not been handed out yet
          // cannot have come from any reader of this cluster: refused,
          // rather than silently meaning "from the live edge".
          horizon_state h;
          if (c->since.pos.tx != 0 && read_horizon(conn, h).ok && c->since.pos.tx >= h.next_tx) {
            c->client->on_error("unknown position " + encode(c->since.pos) +
                                ": no transaction of this database has that id (a position from another cluster, "
                                "or from before a restore?)");
            c->dead = true;
            break;
          }
          // Rows after it that retention dropped: said, not skipped in silence.
          std::vector<table_reader::drop_record> gone;
          if (c->since.pos.tx != 0) {
            if (auto st = reader->drops_after(c->since.pos, 0, gone); !st.ok) {
              spdlog::warn("stream: cannot read what retention dropped ({}): a client resumes unchecked", st.message);
            }
          }
          if (!gone.empty()) {
            c->client->on_error(describe_dropped(c->since.pos, gone));
            c->dead = true;
            break;
          }
          c->pos = c->since.pos;
          probe_.catch_ups.fetch_add(1, std::memory_order_relaxed);
          break;
        }
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

    // The tail: rows past it, formatted once (in the formats the live clients
    // speak) and handed to every live client whose filter matches, as one
    // span per run of matching rows. A live client whose queue is over
    // max_client_buffer_bytes falls behind first: back to the table from the
    // tail, with nothing of this read.
    bool want_ws = false, want_sse = false;
    // When this round's tail read began: the pacing counts from it once the
    // read has rows to write (a read that finds none costs the clients nothing).
    auto read_began = std::chrono::steady_clock::time_point{};
    if (tail_due) {
      read_began = std::chrono::steady_clock::now();
      for (auto& c : clients) {
        if (!c->live) continue;
        if (c->client->queued_bytes() > opts_.max_client_buffer_bytes) {
          c->live = false;
          c->pos = tail;
          probe_.fell_behind.fetch_add(1, std::memory_order_relaxed);
          spdlog::debug("stream: client {} fell behind (over max_client_buffer_bytes): catching it up from the table",
                        c->id);
          probe_.catch_ups.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        (c->client->format() == frame_format::websocket ? want_ws : want_sse) = true;
        c->runs.clear();
        c->in_run = false;
      }
      next_tail_read = std::chrono::steady_clock::now() + std::chrono::milliseconds(opts_.poll_ms);
      if (!want_ws && !want_sse) {
        // No client is live: nobody takes the tail's rows, so the tail moves
        // to the live edge (one index lookup) instead of reading them. Clients
        // behind read them from the table up to the new tail (catch_up); the
        // seam is the same, since no row can later appear at or before the
        // live edge (docs/read.md, "Positions").
        position edge;
        const int64_t started_ns = steady_now_ns();
        if (auto st = reader->live_edge(edge); !st.ok) {
          failed(st);
          continue;
        }
        if (edge < tail) {
          // Only when rows at the end were deleted (or the connection reached
          // another database): the tail stays, and so does every position.
          spdlog::debug("stream: the live edge {} is behind the tail {}; the tail stays", encode(edge), encode(tail));
        }
        tail_moved(std::max(tail, edge), started_ns);
        tail_due = false;
      }
    }
    if (tail_due) {
      read_window tw;
      tw.after = tail;
      tw.limit = opts_.tail_page;
      position before = tail;
      const int64_t read_started_ns = steady_now_ns();
      // Rows found without an own commit noted were committed by another
      // writer after the previous read began, at the earliest (later, if an
      // open transaction held the horizon back: then this undercounts).
      const int64_t rows_commit_ns = commit_ns != 0 ? commit_ns : previous_read_ns;
      auto frames = std::make_shared<event_frames>(want_ws, want_sse, rows_commit_ns);
      auto st = reader->read(tw, [&](const event_row& r) {
        const auto i = static_cast<uint32_t>(frames->size());
        frames->add(r);
        // Only filtered clients look at each row; the others take them all.
        for (auto& c : clients) {
          if (!c->live || c->filter.everything()) continue;
          bool match = c->filter.matches(r.topic, r.kind, r.tenant);
          if (match && !c->in_run) {
            c->run_start = i;
            c->in_run = true;
          } else if (!match && c->in_run) {
            c->runs.emplace_back(c->run_start, i);
            c->in_run = false;
          }
        }
        before = r.pos;
        return row_action::next;
      });
      // Rows read before a failure are handed out too, and the tail moves past
      // them, so nobody gets them twice. A client takes what fits in its
      // buffer (max_client_buffer_bytes, counted as frame_queue charges it);
      // if its rows do not all fit, it falls behind from the last row it was
      // given (a filtered client given none: from the row before its first).
      if (const auto n = static_cast<uint32_t>(frames->size()); n > 0) {
        std::shared_ptr<const event_frames> shared = std::move(frames);
        size_t staged = 0;  // clients handed this read: a write (and a wake-up) each
        for (auto& c : clients) {
          if (!c->live) continue;
          if (c->filter.everything()) {
            c->runs.clear();
            c->runs.emplace_back(0, n);
          } else if (c->in_run) {
            c->runs.emplace_back(c->run_start, n);
          }
          const frame_format fmt = c->client->format();
          const size_t queued = c->client->queued_bytes();
          size_t room = queued < opts_.max_client_buffer_bytes ? opts_.max_client_buffer_bytes - queued : 0;
          // An empty queue takes the whole read whatever its size (a read can
          // be larger than the limit): the limit plus one read, and no client
          // falls behind on every large read.
          const size_t block = shared->bytes(fmt);
          if (queued == 0) room = std::max(room, block);
          // A filtered client's spans keep the whole read's block alive, and
          // its queue is charged the block (frame_queue): it takes all its
          // rows of this read or, without room for the block, none of them.
          if (!c->filter.everything() && !c->runs.empty()) room = block <= room ? block : 0;
          for (auto [first, last] : c->runs) {
            const size_t k = shared->fit(fmt, first, last, room);
            if (k > first) {
              c->client->on_events(shared, first, k);
              probe_.events_delivered.fetch_add(k - first, std::memory_order_relaxed);
              room -= shared->span(fmt, first, k).size();
            }
            if (k < last) {
              c->live = false;
              c->pos = k > 0 ? shared->pos(k - 1) : tail;
              probe_.fell_behind.fetch_add(1, std::memory_order_relaxed);
              probe_.catch_ups.fetch_add(1, std::memory_order_relaxed);
              spdlog::debug("stream: client {} fell behind (over max_client_buffer_bytes): catching it up from the table",
                            c->id);
              break;
            }
          }
          writers_->stage(c->id, c->client);  // all its runs of this read, in one write
          ++staged;
        }
        // Written while the next read goes on.
        writers_->submit(shared->bytes(frame_format::websocket) + shared->bytes(frame_format::sse));
        last_tail_read = read_began;
        live_at_last_read = staged;
      }
      if (!st.ok) {
        tail = before;
        for (auto& c : clients) {
          if (c->live) c->pos = tail;
        }
        failed(st);
        continue;
      }
      tail_moved(before, read_started_ns);
      for (auto& c : clients) {
        if (c->live) c->pos = tail;
      }
    }

    const bool tail_busy =
        live_at_last_read > 0 && std::chrono::steady_clock::now() - last_tail_read < std::chrono::seconds(1);
    if (!catch_up(clients, *reader, tail, tail_busy, failed)) continue;
    std::erase_if(clients, [](const auto& c) { return c->dead; });
    for (const auto& c : clients) {
      if (c->live || !c->started || c->pos > tail) continue;  // ahead of the tail: waits for its next read
      if (c->client->queued_bytes() <= opts_.max_client_buffer_bytes / 2) {
        behind = catching_up::ready;
      } else if (behind == catching_up::none) {
        behind = catching_up::waiting_for_room;
      }
    }
  }
}

}  // namespace evpipe::read
