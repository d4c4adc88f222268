#pragma once
// Where a replay's events go, and which of them have arrived: stdout counts
// what was written, an evpipe TCP source what it acknowledged (committed).
// The replay prints done_position() as its last position, so a resumed
// replay neither skips nor, beyond what the idempotency keys absorb, repeats.
//
// Owned and used by the replay's one thread.

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "read/position.h"

namespace evpipe::read {

class replay_output {
 public:
  virtual ~replay_output() = default;
  // One event. `topic` and `payload` are the row's; false when the output
  // failed (last_error() says why).
  [[nodiscard]] virtual bool write(position pos, std::string_view topic, std::string_view payload,
                                   bool payload_has_topic) = 0;
  // Hands what is buffered to the output (before a pause of --rate).
  [[nodiscard]] virtual bool flush() = 0;
  // Flushes and, for a pipeline, waits for the acknowledgements (bounded).
  [[nodiscard]] virtual bool finish() = 0;
  // The last event known to have arrived (nullopt: none yet).
  [[nodiscard]] virtual std::optional<position> done_position() const = 0;
  [[nodiscard]] const std::string& last_error() const { return error_; }

 protected:
  std::string error_;
};

// NDJSON on stdout: {"position":"…","topic":"…","event":{…}} per line.
[[nodiscard]] std::unique_ptr<replay_output> make_stdout_output();

// The events themselves, one per line, to an evpipe TCP source at host:port
// (the event's topic added as its "topic" field when it has none, so it
// lands in the same topic); at most `window` unacknowledged.
[[nodiscard]] std::unique_ptr<replay_output> make_tcp_output(const std::string& host, uint16_t port, size_t window);

// The stdout line of one event (exposed for tests).
void append_ndjson_line(std::string& out, position pos, std::string_view topic, std::string_view payload);

}  // namespace evpipe::read
