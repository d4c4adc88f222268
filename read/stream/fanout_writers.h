#pragma once
// The threads that write the tail's reads to the live clients' sockets
// (docs/read.md, "Fan-out"). The hub thread queues a read's spans on each
// live client (stream_client::on_events) and stages the client's flush here;
// once every client has its spans, submit() hands the flushes to the
// writers, and the hub goes back to reading while they write. So the next
// read does not wait for 100 sockets: the rows committed meanwhile are read
// while the writes go on, and with two writers the writes of one read run
// on two cores.
//
// How far the hub reads ahead of the writes is bounded: once the reads
// submitted to one writer and not yet taken by it hold more than
// `run_ahead_bytes` (backlog()), the tail waits, and the commits noted
// meanwhile are read together once that writer has taken them (`on_taken`
// wakes the hub). A writer that keeps up takes each read within a few
// milliseconds, and the bound is not reached; one that falls behind on a
// busy machine leaves the rows in the table, as the hub did when it wrote
// the sockets itself, and not in its clients' queues. A writer's reads stop
// counting when it takes them, not when they are written, so a client's
// queue holds what its socket has not taken plus at most about twice
// `run_ahead_bytes` and two reads (what the writer took, what it has not),
// and what max_client_buffer_bytes judges is still the client's pace, not
// the writers'. (Unbounded, every client of a writer that fell behind for
// about a second would go over its limit and back to the table at once.)
//
// A client always goes to the same writer (by its id), which flushes it in
// the order the hub staged it; its frame_queue keeps the bytes in order
// whoever writes them (a writer, the hub's own caught_up and error messages,
// the client's thread). A flush of a client that has gone does no harm
// (the client detached its socket first).
//
// stage() and submit() are the hub thread's (not thread-safe with each
// other); backlog() and request_stop() may be called from any thread.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace evpipe::read {

class stream_client;

class fanout_writers {
 public:
  // Starts `threads` writers (at least one), at the calling thread's
  // priority. `on_taken` is called on a writer's thread when it takes
  // flushes of more than `run_ahead_bytes` (the hub: the tail may read again).
  fanout_writers(size_t threads, size_t run_ahead_bytes, std::function<void()> on_taken);
  ~fanout_writers();  // request_stop(), then joins them
  // Each writer ends after the flush under way; flushes not yet begun are
  // dropped (the hub is stopping: its clients get nothing more).
  void request_stop();
  fanout_writers(const fanout_writers&) = delete;
  fanout_writers& operator=(const fanout_writers&) = delete;

  // Client `id`'s flush, handed to its writer by the next submit().
  void stage(uint64_t id, std::shared_ptr<stream_client> c);
  // Hands what was staged to the writers, waking those that got some;
  // `read_bytes`: the read's frames (what each of its clients is charged).
  void submit(size_t read_bytes);
  // A writer has not yet taken more than run_ahead_bytes of the reads
  // submitted to it: the tail waits. Thread-safe.
  [[nodiscard]] bool backlog() const { return over_.load(std::memory_order_acquire) > 0; }
  [[nodiscard]] size_t threads() const { return writers_.size(); }

  // The default number of writers: one per core, at most four (two and four
  // measured the same on two cores: docs/performance-read.md).
  [[nodiscard]] static size_t default_threads();

 private:
  struct writer;
  void join();  // request_stop(), and waits for the writers' threads to end
  size_t run_ahead_bytes_;
  std::function<void()> on_taken_;
  std::atomic<int> over_{0};  // writers whose untaken reads hold more than run_ahead_bytes_
  std::vector<std::unique_ptr<writer>> writers_;
  std::vector<std::vector<std::shared_ptr<stream_client>>> staged_;  // per writer
};

}  // namespace evpipe::read
