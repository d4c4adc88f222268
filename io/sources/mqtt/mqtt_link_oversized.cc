// mqtt_link: PUBLISH packets too large to hold (over [events]
// max_event_bytes). Their header is parsed, their payload streamed through
// a digest and a prefix kept, and each becomes one too_large dead letter
// (docs/mqtt.md); the rest of the session is in mqtt_link.cc.
#include <xxhash.h>

#include <algorithm>

#include "io/sources/mqtt/mqtt_codec_v5.h"
#include "io/sources/mqtt/mqtt_link.h"

namespace evpipe::io {

bool mqtt_link::start_skip(const mqtt::frame& f, std::string_view avail, std::string& why) {
  why.clear();
  // read_frame has read the whole remaining length: its last byte has the
  // top bit clear.
  size_t header = 1;
  while (static_cast<uint8_t>(avail[header]) & 0x80) ++header;
  ++header;
  uint8_t qos = (f.flags >> 1) & 0x3;
  if (avail.size() < header + 2) return false;  // need the topic length
  size_t tlen = static_cast<uint8_t>(avail[header]) << 8 | static_cast<uint8_t>(avail[header + 1]);
  size_t var = 2 + tlen + (qos > 0 ? 2 : 0);
  if (v5_) {
    // MQTT 5: the properties follow the packet id; skipped with the header.
    size_t pos = header + var;
    uint32_t plen = 0;
    if (avail.size() < pos + 4 && avail.size() < f.size) {
      // The property length may not be all here yet.
      size_t end = pos;
      while (end < avail.size() && (static_cast<uint8_t>(avail[end]) & 0x80)) ++end;
      if (end >= avail.size()) return false;
    }
    if (mqtt::v5::read_varint(avail, pos, plen) != mqtt::decode_status::ok || pos + plen > f.size) {
      why = "malformed PUBLISH from the broker";
      return false;
    }
    var = pos + plen - header;
  }
  if (avail.size() < header + var) return false;
  size_t props_at = header + 2 + tlen + (qos > 0 ? 2 : 0);
  if (v5_ && !tenant_of_oversized_v5(avail.substr(0, header + var), props_at, why)) return false;
  std::string_view topic = avail.substr(header + 2, tlen);
  if (!mqtt::valid_topic_name(topic)) {
    why = "malformed PUBLISH from the broker";
    return false;
  }
  uint16_t id = 0;
  if (qos > 0) {
    id = static_cast<uint16_t>(static_cast<uint8_t>(avail[header + 2 + tlen]) << 8 |
                               static_cast<uint8_t>(avail[header + 3 + tlen]));
  }
  skip_.emplace();
  skip_->seq = take_seq(id, qos, topic, {});
  skip_->topic.assign(topic);
  skip_->left = f.size - header - var;
  skip_->payload_size = skip_->left;
  skip_->received = pipeline::steady_now_ns();
  XXH3_128bits_reset(skip_->state.get());
  begin_ += header + var;
  return true;
}

bool mqtt_link::skip_some() {
  size_t n = std::min(skip_->left, end_ - begin_);
  std::string_view part(buf_.data() + begin_, n);
  if (skip_->prefix.size() < too_large_prefix) {
    skip_->prefix.append(part.substr(0, too_large_prefix - skip_->prefix.size()));
  }
  XXH3_128bits_update(skip_->state.get(), part.data(), part.size());
  begin_ += n;
  skip_->left -= n;
  if (skip_->left > 0) return false;
  XXH128_hash_t h = XXH3_128bits_digest(skip_->state.get());
  if (sh_.cfg.dlq_publish) inflight_.back().payload = skip_->prefix;
  intake_.add_too_large(skip_->prefix, skip_->payload_size, h.low64, h.high64, skip_->seq, skip_->received,
                        skip_->topic);
  skip_.reset();
  return true;
}

}  // namespace evpipe::io
