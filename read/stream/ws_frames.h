#pragma once
// WebSocket framing (RFC 6455 section 5) for the stream's sessions, after
// Beast has answered the upgrade: frames from evpipe are written by the
// session itself, so that everything queued for a client goes out in one
// gather write (read/stream/stream_frames.h), and frames from the client are
// parsed here. Owned by one session, on its thread; not thread-safe.

#include <cstdint>
#include <string>
#include <string_view>

namespace evpipe::read {

enum class ws_opcode : uint8_t { continuation = 0, text = 1, binary = 2, close = 8, ping = 9, pong = 10 };

// A control frame from the server (unmasked, payload at most 125 bytes).
[[nodiscard]] std::string ws_control_frame(ws_opcode op, std::string_view payload);
// A close frame with a status code (1000 normal, 1002 protocol error, 1009 too big).
[[nodiscard]] std::string ws_close_frame(uint16_t code);

// The client's side of the connection: bytes in, messages and control
// frames out. Client frames must be masked; control frames unfragmented and
// at most 125 bytes; a message (text or binary, possibly fragmented) at most
// `max_message` bytes. A frame that breaks these ends the connection (a
// `close` with 1002 or 1009).
class ws_frame_reader {
 public:
  explicit ws_frame_reader(size_t max_message) : max_message_(max_message) {}

  struct frame {
    enum class kind : uint8_t { none, message, ping, pong, close } what = kind::none;
    std::string_view payload;  // message or ping; valid until the next call
    uint16_t code = 0;         // close: the status to answer with
  };
  void append(std::string_view bytes);
  // The next complete message or control frame; `none` when more bytes are
  // needed. Nothing more after a `close`.
  [[nodiscard]] frame next();

 private:
  frame fail(uint16_t code);
  size_t max_message_;
  std::string in_;          // bytes received and not yet parsed, from off_
  size_t off_ = 0;
  std::string message_;     // a message being assembled from fragments
  bool in_message_ = false;
  std::string payload_;     // the last frame's unmasked payload
  bool closed_ = false;
};

}  // namespace evpipe::read
