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
// it. frame_queue: one client's queue, filled by the hub thread and drained by
// the client's thread (thread-safe).

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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

// One client's bytes waiting for its socket, in order. What counts against
// the client's limit (bytes(), max_client_buffer_bytes) is the memory its
// queue keeps alive: the whole block of a read the first time one of its
// spans is queued (a filtered client's few rows keep the whole block, shared
// or not, until they are written), then nothing more for that block's other
// spans while that charged span is still queued (once it has been taken, the
// next span of the block is charged again); a message of its own, its size.
class frame_queue {
 public:
  struct item {
    std::shared_ptr<const void> owner;  // keeps `bytes` alive (shared event_frames, or a message of its own)
    std::string_view bytes;
    size_t charge = 0;                  // what this item added to bytes(): give it back with sent()
    int64_t commit_ns = 0;              // live events: their commit (commit_to_send); 0 otherwise
    uint32_t events = 0;                // events in `bytes`
    std::optional<position> last;       // the position the client has once it has `bytes`
  };

  // Rows [first, last) of `f`, in `fmt`. Returns true when the queue was empty
  // (the client's writer may be idle and must be woken).
  bool push_events(const std::shared_ptr<const event_frames>& f, frame_format fmt, size_t first, size_t last);
  // A message of its own (caught_up, error, ...), already framed.
  bool push_message(std::string framed, std::optional<position> last = std::nullopt);
  // Moves everything queued to `out` (appended), in order.
  void take(std::vector<item>& out);
  // Taken items whose charges add up to `n` were written (or dropped).
  void sent(size_t n) { bytes_.fetch_sub(n, std::memory_order_relaxed); }
  [[nodiscard]] size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  [[nodiscard]] bool empty() const;

 private:
  // `block`: the serial of the read `it` is a span of (0: a message of its
  // own, already charged), `block_bytes` what charging it costs.
  bool push(item it, uint64_t block = 0, size_t block_bytes = 0);
  mutable std::mutex mu_;
  std::deque<item> q_;
  std::atomic<size_t> bytes_{0};
  uint64_t charged_block_ = 0;  // serial of the block charged to an item still queued (under mu_)
};

}  // namespace evpipe::read
