#pragma once
// The stream's events, formatted once and shared by every client that takes
// them (docs/read.md, "Fan-out"). The hub formats the rows of one read (a
// tail read, or a catch-up page) back to back in each wire format a client of
// it speaks: WebSocket text frames, Server-Sent Events frames. A client that
// takes rows [first, last) of a read queues one span of those bytes and a
// reference on the read's block; its thread writes every span it has queued
// in one gather write. So an event delivered to 100 clients is formatted
// once, stored once, and costs each client a slice of a writev, not a
// send(). Nothing here allocates per client per event.
//
// event_frames: built by the hub thread, then immutable and shared
// (std::shared_ptr<const event_frames>) until the last client's socket has
// it. frame_queue: one client's queue, filled by the hub thread and written
// to the client's socket by a fan-out writer (fanout_writers.h), the hub
// thread or the client's thread (thread-safe; who writes: frame_queue).

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/metrics.h"
#include "read/position.h"
#include "read/table_reader.h"

namespace evpipe::read {

// How a client's socket frames messages.
enum class frame_format : uint8_t { websocket, sse };

// The JSON of one event message: {"type":"event","position":…,"topic":…,
// "event":{…}[,"headers":{…}]}; "headers" only for rows that have them (the
// transport's headers, e.g. an MQTT 5 message's content type and user
// properties; docs/mqtt.md).
void append_event_json(std::string& out, const event_row& r);

// One unfragmented WebSocket text frame (server to client: unmasked) of `json`.
void append_ws_text_frame(std::string& out, std::string_view json);
// One SSE frame: `id:` (when given), `event:` and `data:` lines, a blank line.
void append_sse_frame(std::string& out, std::string_view id, std::string_view event, std::string_view json);

class event_frames {
 public:
  // `websocket`, `sse`: which formats to build (those the clients speak).
  // `commit_ns`: steady-clock time of the commit that made these rows
  // readable (0 for a catch-up read; stream_client, stream_probe).
  event_frames(bool websocket, bool sse, int64_t commit_ns);

  void add(const event_row& r);
  [[nodiscard]] size_t size() const { return positions_.size(); }
  [[nodiscard]] position pos(size_t i) const { return positions_[i]; }
  [[nodiscard]] int64_t commit_ns() const { return commit_ns_; }
  // Rows [first, last) in `f` (which must have been built), one contiguous span.
  [[nodiscard]] std::string_view span(frame_format f, size_t first, size_t last) const;
  // The end of the longest run [first, k), k <= last, whose frames in `f`
  // take at most `room` bytes (first when not even one fits).
  [[nodiscard]] size_t fit(frame_format f, size_t first, size_t last, size_t room) const;
  // The first row after `p` (size() when none): rows are in position order.
  [[nodiscard]] size_t first_after(position p) const;
  // All the frames in `f`: what this block holds in memory for that format.
  [[nodiscard]] size_t bytes(frame_format f) const { return f == frame_format::websocket ? ws_.size() : sse_bytes_.size(); }
  // Unique to this block in the process (a client's queue tells blocks apart
  // by it, not by address, which a later block may reuse).
  [[nodiscard]] uint64_t serial() const { return serial_; }

 private:
  uint64_t serial_;
  bool websocket_, sse_;
  int64_t commit_ns_;
  std::vector<position> positions_;
  std::string ws_, sse_bytes_;       // the frames, back to back
  std::vector<uint32_t> ws_end_, sse_end_;  // where frame i ends in each
  std::string json_;                 // scratch: the row's message, reused
};

// Writes `iov` to `fd` with sendmsg(`flags` | MSG_NOSIGNAL), IOV_MAX spans
// per call, until everything is written or a call writes nothing (with
// MSG_DONTWAIT: the socket is full); `iov` is advanced past what was
// written. Returns the bytes written; `failed`: a call failed for another
// reason than a full socket (EAGAIN) or a signal (EINTR, retried).
size_t send_spans(int fd, std::vector<iovec>& iov, int flags, bool& failed);

// One client's bytes waiting for its socket, in order. What counts against
// the client's limit (bytes(), max_client_buffer_bytes) is the memory its
// queue keeps alive: the whole block of a read the first time one of its
// spans is queued (a filtered client's few rows keep the whole block, shared
// or not, until they are written), then nothing more for that block's other
// spans while that charged span is still queued (once it has been taken, the
// next span of the block is charged again); a message of its own, its size.
//
// Who writes the socket (docs/read.md, "Fan-out"): once the hub has queued a
// read's spans for a client whose queue was empty, the client's fan-out
// writer (fanout_writers.h; the hub thread itself for its own messages)
// writes them (write_now), as long as the client's thread does not hold the
// socket; it writes what is queued without blocking, as the fan-out's floor
// does (as a rule one sendmsg per client per read, no wake of the client's
// thread). What the socket does not take at once stays queued, the rest of
// a begun frame first, and the client's thread is woken to write it: it
// holds the socket from take() until a release() that finds nothing queued,
// and writes everything queued in between (blocking, or waiting for the
// socket, as it must). So frames never interleave, and a client that reads
// slower than the stream holds up only its own thread.
class frame_queue {
 public:
  struct item {
    std::shared_ptr<const void> owner;  // keeps `bytes` alive (shared event_frames, or a message of its own)
    std::string_view bytes;
    size_t charge = 0;                  // what this item added to bytes(): give it back with sent()
    int64_t commit_ns = 0;              // live events: their commit (commit_to_send); 0 otherwise
    uint32_t events = 0;                // events in `bytes`
    std::optional<position> last;       // the position the client has once it has `bytes`
    uint64_t block = 0;                 // serial of the event_frames `bytes` is a span of; 0: a message
  };

  // Rows [first, last) of `f`, in `fmt`. Returns true when the queue was empty
  // (call write_now(), and wake the client's thread when it says so).
  bool push_events(const std::shared_ptr<const event_frames>& f, frame_format fmt, size_t first, size_t last);
  // A message of its own (caught_up, error, ...), already framed.
  bool push_message(std::string framed, std::optional<position> last = std::nullopt);

  // The client's socket, for write_now (set by the client's thread when the
  // connection is ready). detach() before the socket is closed: once it
  // returns, no write of a writer's or the hub's is under way on it, and
  // none follows.
  void attach(int fd);
  void detach();
  // A fan-out writer or the hub thread, after a push that returned true.
  // Unless the client's thread holds the socket, writes everything queued
  // without blocking; the events written are timed in `commit_to_send`.
  // Returns true when the client's thread must be woken to write: the socket
  // took only part (it holds the socket from now; the unwritten rest stays
  // queued, first), a write failed (it finds the error), or no socket is
  // attached.
  bool write_now(pipeline::histogram& commit_to_send);
  // Client thread: takes the socket (waiting for a write_now under
  // way) and moves everything queued to `out` (appended), in order.
  void take(std::vector<item>& out);
  // Client thread, its write done: hands the socket back to write_now and
  // returns true when nothing is queued; false when more was queued
  // meanwhile (take() it: the socket is still the client's).
  bool release();
  // Client thread, once the hub queues nothing more (a WebSocket resubscribe,
  // after the old subscription is detached): drops what is queued and not
  // begun (the part of a frame the hub has begun stays, to be finished first).
  void drop_unbegun();
  // Whether write_now wrote part of the queue's first item, so that the
  // socket may be in the middle of a frame.
  [[nodiscard]] bool mid_frame() const;
  // Taken items whose charges add up to `n` were written (or dropped).
  void sent(size_t n) { bytes_.fetch_sub(n, std::memory_order_relaxed); }
  [[nodiscard]] size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  [[nodiscard]] bool empty() const;
  // The position of the last item taken for the socket or written to it
  // (by either thread): what the client has once the socket delivers.
  [[nodiscard]] std::optional<position> last_handed() const;
  // Steady-clock time of write_now's last write to the socket (0: none).
  [[nodiscard]] int64_t last_hub_write_ns() const { return last_hub_write_ns_.load(std::memory_order_relaxed); }

 private:
  // `block`: the serial of the read `it` is a span of (0: a message of its
  // own, already charged), `block_bytes` what charging it costs.
  bool push(item it, uint64_t block = 0, size_t block_bytes = 0);
  mutable std::mutex mu_;
  std::deque<item> q_;
  std::atomic<size_t> bytes_{0};
  uint64_t charged_block_ = 0;  // serial of the block charged to an item still queued (under mu_)
  int fd_ = -1;                 // the socket write_now writes (under mu_)
  bool client_holds_ = false;   // take() until release() (under mu_)
  bool front_begun_ = false;    // q_.front() is the rest of a frame the socket has part of (under mu_)
  std::optional<position> last_handed_;  // under mu_
  std::vector<iovec> iov_;               // write_now's scratch (under mu_)
  std::atomic<int64_t> last_hub_write_ns_{0};
};

}  // namespace evpipe::read
