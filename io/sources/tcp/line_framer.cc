#include "io/sources/tcp/line_framer.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

namespace evpipe::io {

struct line_framer::hash_state {
  XXH3_state_t* st = XXH3_createState();
  ~hash_state() { XXH3_freeState(st); }
};

line_framer::~line_framer() = default;

void line_framer::start_long(std::string_view head) {
  if (!hash_) hash_ = std::make_unique<hash_state>();
  XXH3_128bits_reset(hash_->st);
  long_prefix_.clear();
  long_size_ = 0;
  hash_long(head);
}

void line_framer::hash_long(std::string_view more) {
  if (long_prefix_.size() < too_long_prefix) {
    long_prefix_.append(more.substr(0, too_long_prefix - long_prefix_.size()));
  }
  XXH3_128bits_update(hash_->st, more.data(), more.size());
  long_size_ += more.size();
}

line_framer::item line_framer::end_long() {
  // The digest and size cover every byte before the newline (a trailing "\r"
  // included), whichever way the line was split across reads.
  XXH128_hash_t h = XXH3_128bits_digest(hash_->st);
  item it{kind::too_long, long_prefix_, 0, long_size_, h.low64, h.high64};
  it.readable = long_prefix_.size();
  discarding_ = false;
  return it;
}

line_framer::line_framer(size_t max_line, size_t padding, size_t initial)
    : buf_(std::max<size_t>(initial, 1024) + padding), max_line_(max_line), padding_(padding) {}

void line_framer::make_room() {
  if (end_ < capacity()) return;
  if (begin_ > 0) {
    // Move the partial line to the front.
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
    if (end_ < capacity()) return;
  }
  // A partial line fills the buffer: grow, up to what the longest line needs.
  size_t limit = max_line_ + 2;  // the line, "\r\n"
  if (capacity() < limit) buf_.resize(std::min(capacity() * 2, limit) + padding_);
}

line_framer::span line_framer::writable() {
  make_room();
  return {buf_.data() + end_, capacity() - end_};
}

void line_framer::commit(size_t n) { end_ += n; }

line_framer::item line_framer::next() {
  for (;;) {
    if (begin_ == end_) {
      begin_ = end_ = scanned_ = 0;
      return {};
    }
    const char* base = buf_.data() + begin_;
    size_t avail = end_ - begin_;
    const void* nl = std::memchr(base + scanned_, '\n', avail - scanned_);
    if (discarding_) {
      if (!nl) {
        hash_long(std::string_view(base, avail));  // skip the middle of an over-long line
        begin_ = end_ = scanned_ = 0;
        return {};
      }
      size_t len = static_cast<const char*>(nl) - base;
      hash_long(std::string_view(base, len));
      begin_ += len + 1;
      scanned_ = 0;
      return end_long();
    }
    if (!nl) {
      scanned_ = avail;
      if (avail > max_line_ + 1) {  // + 1: a "\r" may still precede the "\n"
        start_long(std::string_view(base, avail));
        discarding_ = true;
        begin_ = end_ = scanned_ = 0;
        continue;
      }
      return {};
    }
    size_t len = static_cast<const char*>(nl) - base;
    size_t next_begin = begin_ + len + 1;
    std::string_view line(base, len);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    item it{kind::line, line, buf_.size() - begin_, line.size()};
    begin_ = next_begin;
    scanned_ = 0;
    if (line.size() > max_line_) {
      start_long(std::string_view(base, len));
      return end_long();
    }
    return it;
  }
}

line_framer::item line_framer::finish() {
  if (discarding_) {
    if (end_ > begin_) hash_long(std::string_view(buf_.data() + begin_, end_ - begin_));
    begin_ = end_ = scanned_ = 0;
    return end_long();
  }
  if (begin_ == end_) return {};
  std::string_view all(buf_.data() + begin_, end_ - begin_);
  std::string_view line = all;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  item it{kind::line, line, buf_.size() - begin_, line.size()};
  begin_ = end_ = scanned_ = 0;
  if (line.size() > max_line_) {
    start_long(all);
    return end_long();
  }
  return it;
}

}  // namespace evpipe::io
