#include "read/stream/stream_frames.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <chrono>

#include "stages/json_text.h"

namespace evpipe::read {

namespace {
// Where an event message's position starts (append_event_json).
constexpr std::string_view event_json_prefix = "{\"type\":\"event\",\"position\":\"";
}  // namespace

void append_event_json(std::string& out, const event_row& r) {
  out += event_json_prefix;
  out += encode(r.pos);
  out += "\",\"topic\":";
  stages::append_json_string(out, r.topic);
  out += ",\"event\":";
  out.append(r.payload);
  if (!r.headers.empty()) {
    out += ",\"headers\":";
    out.append(r.headers);
  }
  out += '}';
}

void append_ws_text_frame(std::string& out, std::string_view json) {
  // RFC 6455 5.2: FIN + text opcode, then the payload length in 7, 7+16 or
  // 7+64 bits; frames from a server are not masked.
  out += static_cast<char>(0x81);
  const uint64_t n = json.size();
  if (n < 126) {
    out += static_cast<char>(n);
  } else if (n < 65536) {
    out += static_cast<char>(126);
    out += static_cast<char>(n >> 8);
    out += static_cast<char>(n & 0xff);
  } else {
    out += static_cast<char>(127);
    for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((n >> shift) & 0xff);
  }
  out.append(json);
}

void append_sse_frame(std::string& out, std::string_view id, std::string_view event, std::string_view json) {
  if (!id.empty()) {
    out += "id: ";
    out.append(id);
    out += '\n';
  }
  out += "event: ";
  out.append(event);
  // jsonb's text and append_json_string never hold a raw newline, so the
  // message is one data: line.
  out += "\ndata: ";
  out.append(json);
  out += "\n\n";
}

namespace {
std::atomic<uint64_t> next_block_serial{1};
}  // namespace

event_frames::event_frames(bool websocket, bool sse, int64_t commit_ns)
    : serial_(next_block_serial.fetch_add(1, std::memory_order_relaxed)), websocket_(websocket), sse_(sse),
      commit_ns_(commit_ns) {}

void event_frames::add(const event_row& r) {
  positions_.push_back(r.pos);
  if (!websocket_ && !sse_) return;
  json_.clear();
  append_event_json(json_, r);
  if (websocket_) {
    append_ws_text_frame(ws_, json_);
    ws_end_.push_back(static_cast<uint32_t>(ws_.size()));
  }
  if (sse_) {
    // The id is the position, which sits at a fixed place in the message.
    append_sse_frame(sse_bytes_, std::string_view(json_).substr(event_json_prefix.size(), position_text_size), "event", json_);
    sse_end_.push_back(static_cast<uint32_t>(sse_bytes_.size()));
  }
}

std::string_view event_frames::span(frame_format f, size_t first, size_t last) const {
  const std::string& bytes = f == frame_format::websocket ? ws_ : sse_bytes_;
  const std::vector<uint32_t>& end = f == frame_format::websocket ? ws_end_ : sse_end_;
  if (first >= last || last > end.size()) return {};
  const size_t begin = first == 0 ? 0 : end[first - 1];
  return std::string_view(bytes).substr(begin, end[last - 1] - begin);
}

size_t event_frames::fit(frame_format f, size_t first, size_t last, size_t room) const {
  const std::vector<uint32_t>& end = f == frame_format::websocket ? ws_end_ : sse_end_;
  if (first >= last || last > end.size()) return first;
  const uint64_t begin = first == 0 ? 0 : end[first - 1];
  const uint64_t limit = begin + room;
  return static_cast<size_t>(std::upper_bound(end.begin() + static_cast<ptrdiff_t>(first),
                                              end.begin() + static_cast<ptrdiff_t>(last), limit,
                                              [](uint64_t v, uint32_t e) { return v < e; }) -
                             end.begin());
}

size_t event_frames::first_after(position p) const {
  return static_cast<size_t>(std::upper_bound(positions_.begin(), positions_.end(), p) - positions_.begin());
}

bool frame_queue::push_events(const std::shared_ptr<const event_frames>& f, frame_format fmt, size_t first,
                              size_t last) {
  if (first >= last) return false;
  item it;
  it.bytes = f->span(fmt, first, last);
  it.owner = f;
  it.commit_ns = f->commit_ns();
  it.events = static_cast<uint32_t>(last - first);
  it.last = f->pos(last - 1);
  it.block = f->serial();
  return push(std::move(it), f->serial(), f->bytes(fmt));
}

bool frame_queue::push_message(std::string framed, std::optional<position> last) {
  auto owned = std::make_shared<const std::string>(std::move(framed));
  item it;
  it.bytes = *owned;
  it.charge = it.bytes.size();
  it.owner = std::move(owned);
  it.last = last;
  return push(std::move(it));
}

bool frame_queue::push(item it, uint64_t block, size_t block_bytes) {
  std::lock_guard lock(mu_);
  // A block is charged with its first span, and again with a later one once
  // the charged span has been taken (its charge may come back before this
  // span is written).
  if (block != 0 && block != charged_block_) {
    charged_block_ = block;
    it.charge = block_bytes;
  }
  bytes_.fetch_add(it.charge, std::memory_order_relaxed);
  bool was_empty = q_.empty();
  q_.push_back(std::move(it));
  return was_empty;
}

void frame_queue::attach(int fd) {
  std::lock_guard lock(mu_);
  fd_ = fd;
}

void frame_queue::detach() {
  std::lock_guard lock(mu_);
  fd_ = -1;
}

size_t send_spans(int fd, std::vector<iovec>& iov, int flags, bool& failed) {
  failed = false;
  size_t written = 0;
  for (size_t at = 0; at < iov.size();) {
    msghdr msg{};
    msg.msg_iov = iov.data() + at;
    msg.msg_iovlen = std::min<size_t>(iov.size() - at, IOV_MAX);
    ssize_t n = ::sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      failed = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
      break;
    }
    written += static_cast<size_t>(n);
    // Past the spans written whole; into the one written in part.
    auto left = static_cast<size_t>(n);
    while (at < iov.size() && left >= iov[at].iov_len) left -= iov[at++].iov_len;
    if (left > 0) {
      iov[at].iov_base = static_cast<char*>(iov[at].iov_base) + left;
      iov[at].iov_len -= left;
    }
  }
  return written;
}

bool frame_queue::write_now(pipeline::histogram& commit_to_send) {
  std::lock_guard lock(mu_);
  if (client_holds_ || q_.empty()) return false;  // the client's thread looks again before it lets go
  if (fd_ < 0) return true;
  // A span per run of the client's rows of a read (one for a client without
  // a filter) and a message or two; IOV_MAX spans per call.
  iov_.clear();
  for (const auto& it : q_) iov_.push_back({const_cast<char*>(it.bytes.data()), it.bytes.size()});
  bool failed = false;
  size_t written = send_spans(fd_, iov_, MSG_DONTWAIT, failed);
  const int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  if (written > 0) last_hub_write_ns_.store(now, std::memory_order_relaxed);
  // The items written whole leave the queue; a begun one keeps its rest.
  while (written > 0 && !q_.empty()) {
    item& front = q_.front();
    if (front.last) last_handed_ = front.last;
    if (written < front.bytes.size()) {
      front.bytes.remove_prefix(written);
      front_begun_ = true;
      break;
    }
    written -= front.bytes.size();
    if (front.commit_ns != 0) commit_to_send.observe_ns(now - front.commit_ns, front.events);
    bytes_.fetch_sub(front.charge, std::memory_order_relaxed);
    if (front.charge > 0 && front.block != 0 && front.block == charged_block_) charged_block_ = 0;
    front_begun_ = false;
    q_.pop_front();
  }
  if (q_.empty() && !failed) return false;
  client_holds_ = true;  // the rest is the client's thread's to write
  return true;
}

void frame_queue::take(std::vector<item>& out) {
  std::lock_guard lock(mu_);
  client_holds_ = true;
  for (auto& it : q_) {
    if (it.last) last_handed_ = it.last;
    out.push_back(std::move(it));
  }
  q_.clear();
  charged_block_ = 0;
  front_begun_ = false;
}

bool frame_queue::release() {
  std::lock_guard lock(mu_);
  if (!q_.empty()) return false;
  client_holds_ = false;
  return true;
}

void frame_queue::drop_unbegun() {
  std::lock_guard lock(mu_);
  const size_t keep = front_begun_ ? 1 : 0;
  size_t n = 0;
  while (q_.size() > keep) {
    n += q_.back().charge;
    q_.pop_back();
  }
  bytes_.fetch_sub(n, std::memory_order_relaxed);
  if (q_.empty() || q_.front().charge == 0 || q_.front().block != charged_block_) charged_block_ = 0;
}

bool frame_queue::mid_frame() const {
  std::lock_guard lock(mu_);
  return front_begun_;
}

bool frame_queue::empty() const {
  std::lock_guard lock(mu_);
  return q_.empty();
}

std::optional<position> frame_queue::last_handed() const {
  std::lock_guard lock(mu_);
  return last_handed_;
}

}  // namespace evpipe::read
