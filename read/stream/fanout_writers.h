#pragma once
// The threads that write the tail's reads to the live clients' sockets
// (docs/read.md, "Fan-out"). The hub thread queues a read's spans on each
// live client (stream_client::on_events) and stages the client's flush here;
// once every client has its spans, submit() hands the flushes to the
// writers, and the hub goes back to reading while they write. So the next
// read does not wait for 100 sockets: the rows committed meanwhile are read
// while the writes go on, and with two writers the writes of one read run
// on two cores. A writer still busy with earlier reads finds the later
// ones queued, and writes all of a client's queued reads in one call.
//
// A client always goes to the same writer (by its id), which flushes it in
// the order the hub staged it; its frame_queue keeps the bytes in order
// whoever writes them (a writer, the hub's own caught_up and error messages,
// the client's thread). A flush of a client that has gone does nothing
// (the client detached its socket first).
//
// Used by the hub thread only: stage() and submit() are not thread-safe with
// each other; the writers are its own.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace evpipe::read {

class stream_client;

class fanout_writers {
 public:
  // Starts `threads` writers (at least one), at the calling thread's priority.
  explicit fanout_writers(size_t threads);
  ~fanout_writers();  // stops them; flushes not yet begun are dropped
  fanout_writers(const fanout_writers&) = delete;
  fanout_writers& operator=(const fanout_writers&) = delete;

  // Client `id`'s flush, handed to its writer by the next submit().
  void stage(uint64_t id, std::shared_ptr<stream_client> c);
  // Hands what was staged to the writers, waking those that got some.
  void submit();
  [[nodiscard]] size_t threads() const { return writers_.size(); }

  // The default number of writers: one per core, at most four (two and four
  // measured the same on two cores: docs/performance-read.md).
  [[nodiscard]] static size_t default_threads();

 private:
  struct writer;
  std::vector<std::unique_ptr<writer>> writers_;
  std::vector<std::vector<std::shared_ptr<stream_client>>> staged_;  // per writer
};

}  // namespace evpipe::read
