#include "read/stream/ws_frames.h"

namespace evpipe::read {

std::string ws_control_frame(ws_opcode op, std::string_view payload) {
  if (payload.size() > 125) payload = payload.substr(0, 125);
  std::string f;
  f += static_cast<char>(0x80 | static_cast<uint8_t>(op));
  f += static_cast<char>(payload.size());
  f.append(payload);
  return f;
}

std::string ws_close_frame(uint16_t code) {
  const char body[2] = {static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
  return ws_control_frame(ws_opcode::close, std::string_view(body, 2));
}

void ws_frame_reader::append(std::string_view bytes) {
  if (off_ > 0) {
    in_.erase(0, off_);
    off_ = 0;
  }
  in_.append(bytes);
}

ws_frame_reader::frame ws_frame_reader::fail(uint16_t code) {
  closed_ = true;
  frame f;
  f.what = frame::kind::close;
  f.code = code;
  return f;
}

ws_frame_reader::frame ws_frame_reader::next() {
  for (;;) {
    if (closed_) return {};
    const auto* p = reinterpret_cast<const unsigned char*>(in_.data()) + off_;
    const size_t avail = in_.size() - off_;
    if (avail < 2) return {};
    const bool fin = (p[0] & 0x80) != 0;
    const auto op = static_cast<ws_opcode>(p[0] & 0x0f);
    const bool control = (p[0] & 0x08) != 0;
    if ((p[0] & 0x70) != 0) return fail(1002);  // no extension was negotiated
    if ((p[1] & 0x80) == 0) return fail(1002);  // client frames are masked
    uint64_t len = p[1] & 0x7f;
    size_t head = 2;
    if (len == 126) {
      if (avail < 4) return {};
      len = (uint64_t{p[2]} << 8) | p[3];
      head = 4;
    } else if (len == 127) {
      if (avail < 10) return {};
      len = 0;
      for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
      head = 10;
    }
    if (control && (len > 125 || !fin)) return fail(1002);
    if (!control && len > max_message_) return fail(1009);
    head += 4;  // the masking key
    if (avail < head + len) return {};
    const unsigned char* mask = p + head - 4;
    payload_.resize(len);
    for (size_t i = 0; i < len; ++i) payload_[i] = static_cast<char>(p[head + i] ^ mask[i & 3]);
    off_ += head + len;

    frame f;
    switch (op) {
      case ws_opcode::text:
      case ws_opcode::binary:
        if (in_message_) return fail(1002);  // a new message inside a fragmented one
        if (!fin) {
          message_ = payload_;
          in_message_ = true;
          continue;
        }
        f.what = frame::kind::message;
        f.payload = payload_;
        return f;
      case ws_opcode::continuation:
        if (!in_message_) return fail(1002);
        if (message_.size() + payload_.size() > max_message_) return fail(1009);
        message_ += payload_;
        if (!fin) continue;
        in_message_ = false;
        payload_.swap(message_);
        message_.clear();
        f.what = frame::kind::message;
        f.payload = payload_;
        return f;
      case ws_opcode::ping:
        f.what = frame::kind::ping;
        f.payload = payload_;
        return f;
      case ws_opcode::pong:
        f.what = frame::kind::pong;
        return f;
      case ws_opcode::close: {
        // Answered with the client's own status (1000 when it gave none).
        uint16_t code = payload_.size() >= 2 ? static_cast<uint16_t>((static_cast<unsigned char>(payload_[0]) << 8) |
                                                                     static_cast<unsigned char>(payload_[1]))
                                             : 1000;
        closed_ = true;
        f.what = frame::kind::close;
        f.code = code;
        return f;
      }
    }
    return fail(1002);  // an opcode RFC 6455 reserves
  }
}

}  // namespace evpipe::read
