#pragma once
// The stream's one tail reader and its fan-out (docs/read.md). One thread
// reads events_mirror past the last position every poll_ms (rows of this
// process, of other evpipe processes and of other writers alike), and soon
// after a shard of this process commits (note_commit(): at once, or paced by
// max_fanout_writes_per_s when many clients listen), formats each
// read's rows once (stream_frames.h) and hands the live clients whose
// filters match their spans of it, which the fan-out writers write to the
// sockets while it reads on (fanout_writers.h). A client that asks for an
// older position,
// or whose send buffer passes max_client_buffer_bytes, is caught up from the
// table by the same thread, page by page while its buffer has room, up to
// the tail's position (clients with one filter share those reads); then it
// is live again. The tail never waits for a client, so ingest never does.
//
// The hub connects to PostgreSQL only while it has clients. Thread-safe:
// add() and remove() from any thread; clients are called on the hub thread,
// except flush(), which a fan-out writer calls (fanout_writers.h).

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "pipeline/metrics.h"
#include "read/position.h"
#include "read/table_reader.h"
#include "read/stream/fanout_writers.h"
#include "read/stream/stream_frames.h"

namespace evpipe::read {

class table_reader;

// What a client receives, called on the hub thread (flush(): on a fan-out
// writer's, or the hub's, while the hub goes on). Must not block: a
// client queues the bytes (read/stream/stream_frames.h) and writes what the
// socket takes without blocking, leaving the rest to its own thread.
class stream_client {
 public:
  virtual ~stream_client() = default;
  // The wire format the hub builds this client's frames in.
  [[nodiscard]] virtual frame_format format() const = 0;
  // Rows [first, last) of `frames`, every one matching the client's filter,
  // in position order. `frames` is shared with the other clients that take
  // them; its commit_ns() is the steady-clock time of the commit that made
  // the rows readable (stream_hub::note_commit), 0 for a catch-up read; the
  // client records commit_to_send when it has written them to its socket.
  virtual void on_events(const std::shared_ptr<const event_frames>& frames, size_t first, size_t last) = 0;
  // The hub has handed the client all its rows of one read (each run of
  // matching rows in an on_events call): a client that writes its socket
  // outside its own thread (frame_queue::write_now) writes them now, in one
  // call, rather than once per run. Called by a fan-out writer for a tail
  // read (while the hub may already call on_events with the next: the two
  // must be safe together), by the hub for a catch-up page. on_caught_up
  // writes at once, and so does on_error (or it wakes the client's thread,
  // which ends the stream).
  virtual void flush() {}
  virtual void on_caught_up(position pos) = 0;
  virtual void on_error(std::string_view message) = 0;  // the hub gives the client up after this
  // Bytes queued and not yet sent (thread-safe).
  [[nodiscard]] virtual size_t queued_bytes() const = 0;
};

// What a client wants: rows that match any of its subscriptions (each its
// topics and its kinds: row_clause), of its tenant.
struct stream_filter {
  std::vector<row_clause> any_of;     // [] = every row
  std::optional<std::string> tenant;  // this tenant's rows only (docs/tenants.md); unset = every tenant
  [[nodiscard]] bool matches(std::string_view topic, std::string_view kind, std::string_view row_tenant = {}) const;
  [[nodiscard]] bool everything() const {
    return !tenant && (any_of.empty() || std::any_of(any_of.begin(), any_of.end(),
                                                     [](const row_clause& c) { return c.everything(); }));
  }
  bool operator==(const stream_filter&) const = default;
};

// Where a client starts.
struct stream_since {
  enum class kind : uint8_t { now, after_position, from_time } what = kind::now;
  position pos;      // after_position
  std::string time;  // from_time: rows created at or after it (ISO 8601)
};

struct stream_hub_options {
  std::string dsn, schema;
  uint32_t poll_ms = 20;
  size_t max_client_buffer_bytes = 8u << 20;
  // Rows of a client's first catch-up read (shared by the clients at one
  // filter and position). Each full page a client takes doubles its next,
  // up to tail_page rows and what fits in a quarter of
  // max_client_buffer_bytes (fewer than this for rows that large; a page
  // stops at that quarter in any case: docs/read.md, "Catch-up pages
  // grow"). While the tail hands live clients rows (within the last
  // second), a page holds their next read back for as long as it reads, and
  // pages are at most this size.
  uint32_t catch_up_page = 500;
  uint32_t tail_page = 10'000;    // rows per tail read
  uint32_t writer_threads = 0;    // threads writing the tail's reads to the sockets (fanout_writers); 0: default_threads()
  // Paces the reads a noted commit starts: the next begins no sooner than
  // N / this many seconds after the previous tail read with rows began, N
  // being the clients it was handed to (at most poll_ms), so that the reads'
  // writes (one per client handed a read) stay near this many a second.
  // 0: a read on every noted commit.
  uint32_t max_fanout_writes_per_s = 20'000;
};

// How long after a tail read the next read a noted commit starts may begin
// (stream_hub_options::max_fanout_writes_per_s).
[[nodiscard]] std::chrono::microseconds commit_read_spacing(size_t live_clients, uint32_t max_fanout_writes_per_s,
                                                            uint32_t poll_ms) noexcept;

// Why a stream client's connection ended (label of _stream_disconnects_total).
enum class disconnect_reason : uint8_t {
  client_closed,     // the client closed the connection, or it broke (read or write failed)
  heartbeat_missed,  // a WebSocket client did not answer the previous ping within heartbeat_s
  stream_error,      // the stream gave the client up (e.g. a since time PostgreSQL does not take)
  shutdown,          // evpipe stopped
  count_
};
[[nodiscard]] std::string_view disconnect_reason_name(disconnect_reason r) noexcept;

// Counters for /metrics and tests (relaxed atomics).
struct stream_probe {
  std::atomic<int64_t> clients{0};
  std::atomic<uint64_t> events_delivered{0};
  std::atomic<uint64_t> catch_ups{0};        // clients moved (back) to catch-up from the table
  std::atomic<uint64_t> fell_behind{0};      // of which: buffer over max_client_buffer_bytes
  std::atomic<uint64_t> read_errors{0};
  // Times the tail was due but waited for a fan-out writer to take earlier
  // reads (fanout_writers.h): the writers, not the clients, were behind.
  std::atomic<uint64_t> writer_waits{0};
  // Age of the oldest transaction in the cluster that has written and is
  // still open: it holds every reader's horizon back (docs/read.md). Sampled
  // once a second while clients listen; 0 when there is none.
  std::atomic<double> horizon_age_s{0};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(disconnect_reason::count_)> disconnects{};
  void disconnected(disconnect_reason r) noexcept {
    disconnects[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed);
  }
  // From the commit that made a row readable to the write of its event to a
  // client's socket, for live deliveries (catch-up rows are not counted).
  // The commit is this process's own shard commit when one was noted since
  // the tail's previous read that found rows, else the start of that read
  // (rows of other writers: the earliest moment the tail could have seen
  // them). See docs/read.md.
  pipeline::histogram commit_to_send;
};

// Each client's thread runs this much nicer than the rest of evpipe: when
// CPU is short, the shards and sources keep their rate and a client that
// reads slowly falls behind, which it survives by design (it goes back to
// catch-up from the table). The hub's thread and its fan-out writers
// (fanout_writers.h) run at evpipe's own priority: the writers write each
// read to every idle client's socket, without blocking
// (frame_queue::write_now), so their work is bounded per event and per
// client, and a hub or writer starved behind ingest delays every client at
// once (docs/performance-read.md, "The hub writes the sockets" and "The
// fan-out writers": writers at nice 5 were worse in every pair). Applied by
// lower_stream_thread_priority() on the calling thread (Linux: per thread).
inline constexpr int stream_thread_nice = 10;
void lower_stream_thread_priority() noexcept;

// The probe in Prometheus text, names under `prefix` ("evpipe_stream_...").
[[nodiscard]] std::string render_stream_metrics(const stream_probe& p, const std::string& prefix);

class stream_hub {
 public:
  explicit stream_hub(stream_hub_options o);
  ~stream_hub();
  stream_hub(const stream_hub&) = delete;
  stream_hub& operator=(const stream_hub&) = delete;

  void start();
  void stop();  // joins the thread; clients get nothing more

  // Registers a client; returns its id for remove().
  uint64_t add(std::shared_ptr<stream_client> c, stream_filter f, stream_since since);
  void remove(uint64_t id);
  // A shard of this process committed at `commit_ns` (steady clock): the
  // tail reads at once (or once the pacing, commit_read_spacing, allows)
  // instead of at its next poll. Thread-safe and cheap
  // (a lock and a notify; nothing when no client listens).
  void note_commit(int64_t commit_ns);
  [[nodiscard]] stream_probe& probe() { return probe_; }

 private:
  struct client_state;
  void run();
  // One round of catch-up reads (on the hub thread); false when a read
  // failed (`failed` was called). `tail_busy`: live clients were handed
  // rows of the tail lately, and a page holds their next read back.
  bool catch_up(std::vector<std::shared_ptr<client_state>>& clients, table_reader& reader, position tail,
                bool tail_busy, const std::function<void(const io::pg_status&)>& failed);

  stream_hub_options opts_;
  stream_probe probe_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::shared_ptr<client_state>> pending_;   // added, not yet seen by the hub thread
  std::vector<uint64_t> removed_;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  int64_t earliest_commit_ns_ = 0;  // the earliest commit noted since the hub last looked; 0: none
  std::unique_ptr<fanout_writers> writers_;  // from start() to stop()
  std::thread thread_;
};

}  // namespace evpipe::read
