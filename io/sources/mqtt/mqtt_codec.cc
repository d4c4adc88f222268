#include "io/sources/mqtt/mqtt_codec.h"

#include <simdjson.h>

namespace evpipe::io::mqtt {

namespace {

// Reads big-endian fields and length-prefixed strings; any read past the end
// marks the reader failed instead of touching memory.
struct reader {
  std::string_view in;
  size_t pos = 0;
  bool failed = false;

  [[nodiscard]] size_t left() const noexcept { return in.size() - pos; }
  uint8_t u8() noexcept {
    if (left() < 1) return fail(), 0;
    return static_cast<uint8_t>(in[pos++]);
  }
  uint16_t u16() noexcept {
    if (left() < 2) return fail(), 0;
    uint16_t v = static_cast<uint16_t>(static_cast<uint8_t>(in[pos]) << 8 | static_cast<uint8_t>(in[pos + 1]));
    pos += 2;
    return v;
  }
  std::string_view str() noexcept {
    uint16_t n = u16();
    if (failed || left() < n) return fail(), std::string_view{};
    std::string_view s = in.substr(pos, n);
    pos += n;
    return s;
  }
  void fail() noexcept { failed = true; }
};

void put_u16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}
void put_str(std::string& out, std::string_view s) {
  put_u16(out, static_cast<uint16_t>(s.size()));
  out.append(s);
}
void put_header(std::string& out, packet_type t, uint8_t flags, size_t remaining) {
  out.push_back(static_cast<char>(static_cast<uint8_t>(t) << 4 | (flags & 0x0f)));
  encode_remaining_length(out, static_cast<uint32_t>(remaining));
}

// UTF-8 as MQTT 1.5.3 requires: well-formed, no U+0000.
bool mqtt_string(std::string_view s) noexcept {
  return s.find('\0') == std::string_view::npos && simdjson::validate_utf8(s.data(), s.size());
}

}  // namespace

bool valid_topic_name(std::string_view s) noexcept {
  return !s.empty() && s.size() <= 65535 && s.find_first_of("+#") == std::string_view::npos && mqtt_string(s);
}

bool valid_topic_filter(std::string_view s) noexcept {
  if (s.empty() || s.size() > 65535 || !mqtt_string(s)) return false;
  size_t start = 0;
  for (;;) {
    size_t end = s.find('/', start);
    std::string_view level = s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (level.find_first_of("+#") != std::string_view::npos) {
      if (level.size() != 1) return false;                                 // "a+" or "#b"
      if (level == "#" && end != std::string_view::npos) return false;     // '#' must be last
    }
    if (end == std::string_view::npos) return true;
    start = end + 1;
  }
}

bool filter_can_match_prefix(std::string_view filter, std::string_view prefix) noexcept {
  // Walk the filter level by level against the prefix. A topic under the
  // prefix is the prefix followed by anything, so once the prefix runs out (or
  // ends inside a level) any remaining filter levels can still match.
  size_t f = 0, p = 0;
  for (;;) {
    if (p >= prefix.size()) return true;
    if (f >= filter.size()) return false;
    size_t f_end = filter.find('/', f);
    if (f_end == std::string_view::npos) f_end = filter.size();
    std::string_view level = filter.substr(f, f_end - f);
    size_t p_end = prefix.find('/', p);
    bool prefix_level_complete = p_end != std::string_view::npos;
    if (!prefix_level_complete) p_end = prefix.size();
    std::string_view plevel = prefix.substr(p, p_end - p);
    if (level == "#") return true;
    if (level != "+") {
      // An incomplete last prefix level only needs to start the filter level.
      if (prefix_level_complete ? level != plevel : level.substr(0, plevel.size()) != plevel) return false;
    }
    if (!prefix_level_complete) return true;
    // The prefix goes on past this level: the filter needs another level.
    if (f_end == filter.size()) return false;
    f = f_end + 1;
    p = p_end + 1;
  }
}


void encode_remaining_length(std::string& out, uint32_t n) {
  // 7 bits a byte, least significant first; the top bit says "more".
  do {
    uint8_t b = n % 128;
    n /= 128;
    if (n > 0) b |= 0x80;
    out.push_back(static_cast<char>(b));
  } while (n > 0);
}

decode_status read_frame(std::string_view buf, size_t max_packet, frame& out) noexcept {
  if (buf.empty()) return decode_status::need_more;
  uint8_t first = static_cast<uint8_t>(buf[0]);
  uint8_t type = first >> 4, flags = first & 0x0f;
  if (type == 0 || type == 15) return decode_status::malformed;
  // Fixed flags per type (MQTT 2.2.2): 0010 for PUBREL, SUBSCRIBE,
  // UNSUBSCRIBE; 0000 for all others but PUBLISH.
  auto t = static_cast<packet_type>(type);
  bool needs_0010 = t == packet_type::pubrel || t == packet_type::subscribe || t == packet_type::unsubscribe;
  if (t != packet_type::publish && flags != (needs_0010 ? 0x2 : 0x0)) return decode_status::malformed;
  if (t == packet_type::publish) {
    uint8_t qos = (flags >> 1) & 0x3;
    if (qos == 3) return decode_status::malformed;
  }
  uint32_t remaining = 0, multiplier = 1;
  size_t i = 1;
  for (;; ++i) {
    if (i > 4) return decode_status::malformed;  // a fifth length byte
    if (i >= buf.size()) return decode_status::need_more;
    uint8_t b = static_cast<uint8_t>(buf[i]);
    remaining += (b & 0x7f) * multiplier;
    multiplier *= 128;
    if (!(b & 0x80)) break;
  }
  size_t header = i + 1;
  if (header + remaining > max_packet) {
    // The caller may skip the packet as it streams in: say what and how big.
    out.type = t;
    out.flags = flags;
    out.body = {};
    out.size = header + remaining;
    return decode_status::too_large;
  }
  if (buf.size() < header + remaining) return decode_status::need_more;
  out.type = t;
  out.flags = flags;
  out.body = buf.substr(header, remaining);
  out.size = header + remaining;
  return decode_status::ok;
}

decode_status parse_connect(const frame& f, connect_packet& out) {
  if (f.type != packet_type::connect) return decode_status::malformed;
  reader r{f.body};
  if (r.str() != "MQTT") return decode_status::malformed;
  if (r.u8() != 4) return decode_status::unsupported;  // protocol level 4 = 3.1.1
  uint8_t cflags = r.u8();
  if (cflags & 0x01) return decode_status::malformed;  // reserved bit
  out.clean_session = cflags & 0x02;
  if (cflags & 0x04) return decode_status::unsupported;  // will message
  if (cflags & 0x38) return decode_status::malformed;    // will QoS/retain without a will
  out.keepalive_s = r.u16();
  std::string_view id = r.str();
  if (r.failed || !mqtt_string(id)) return decode_status::malformed;
  out.client_id.assign(id);
  out.username.reset();
  out.password.reset();
  if (cflags & 0x80) {
    std::string_view u = r.str();
    if (r.failed || !mqtt_string(u)) return decode_status::malformed;
    out.username.emplace(u);
  }
  if (cflags & 0x40) {
    if (!(cflags & 0x80)) return decode_status::malformed;  // a password needs a user name
    std::string_view pw = r.str();
    if (r.failed) return decode_status::malformed;
    out.password.emplace(pw);
  }
  return r.failed || r.left() != 0 ? decode_status::malformed : decode_status::ok;
}

decode_status parse_connack(const frame& f, connack_packet& out) noexcept {
  if (f.type != packet_type::connack || f.body.size() != 2) return decode_status::malformed;
  uint8_t ack_flags = static_cast<uint8_t>(f.body[0]);
  if (ack_flags & 0xfe) return decode_status::malformed;
  out.session_present = ack_flags & 1;
  out.return_code = static_cast<uint8_t>(f.body[1]);
  if (out.return_code > 5) return decode_status::malformed;
  return decode_status::ok;
}

decode_status parse_publish(const frame& f, publish_packet& out) noexcept {
  if (f.type != packet_type::publish) return decode_status::malformed;
  out.retain = f.flags & 0x1;
  out.qos = (f.flags >> 1) & 0x3;
  out.dup = f.flags & 0x8;
  if (out.qos == 0 && out.dup) return decode_status::malformed;  // MQTT-3.3.1-2
  reader r{f.body};
  out.topic = r.str();
  if (r.failed || !valid_topic_name(out.topic)) return decode_status::malformed;
  out.packet_id = 0;
  if (out.qos > 0) {
    out.packet_id = r.u16();
    if (r.failed || out.packet_id == 0) return decode_status::malformed;
  }
  out.payload = f.body.substr(r.pos);
  return decode_status::ok;
}

decode_status parse_packet_id(const frame& f, uint16_t& id) noexcept {
  bool acks = f.type == packet_type::puback || f.type == packet_type::pubrec || f.type == packet_type::pubrel ||
              f.type == packet_type::pubcomp || f.type == packet_type::unsuback;
  if (!acks || f.body.size() != 2) return decode_status::malformed;
  reader r{f.body};
  id = r.u16();
  return id == 0 ? decode_status::malformed : decode_status::ok;
}

decode_status parse_subscribe(const frame& f, subscribe_packet& out) {
  if (f.type != packet_type::subscribe) return decode_status::malformed;
  reader r{f.body};
  out.packet_id = r.u16();
  if (r.failed || out.packet_id == 0) return decode_status::malformed;
  out.filters.clear();
  while (r.left() > 0) {
    std::string_view filter = r.str();
    uint8_t qos = r.u8();
    if (r.failed || !valid_topic_filter(filter) || qos > 2) return decode_status::malformed;
    out.filters.emplace_back(std::string(filter), qos);
  }
  return out.filters.empty() ? decode_status::malformed : decode_status::ok;  // MQTT-3.8.3-3
}

decode_status parse_suback(const frame& f, suback_packet& out) {
  if (f.type != packet_type::suback) return decode_status::malformed;
  reader r{f.body};
  out.packet_id = r.u16();
  if (r.failed || out.packet_id == 0 || r.left() == 0) return decode_status::malformed;
  out.return_codes.clear();
  while (r.left() > 0) {
    uint8_t code = r.u8();
    if (code > 2 && code != 0x80) return decode_status::malformed;
    out.return_codes.push_back(code);
  }
  return decode_status::ok;
}

decode_status parse_unsubscribe(const frame& f, unsubscribe_packet& out) {
  if (f.type != packet_type::unsubscribe) return decode_status::malformed;
  reader r{f.body};
  out.packet_id = r.u16();
  if (r.failed || out.packet_id == 0) return decode_status::malformed;
  out.filters.clear();
  while (r.left() > 0) {
    std::string_view filter = r.str();
    if (r.failed || !valid_topic_filter(filter)) return decode_status::malformed;
    out.filters.emplace_back(filter);
  }
  return out.filters.empty() ? decode_status::malformed : decode_status::ok;  // MQTT-3.10.3-2
}

void encode_connect(std::string& out, const connect_packet& p) {
  std::string body;
  put_str(body, "MQTT");
  body.push_back(4);
  uint8_t flags = (p.clean_session ? 0x02 : 0) | (p.username ? 0x80 : 0) | (p.password ? 0x40 : 0);
  body.push_back(static_cast<char>(flags));
  put_u16(body, p.keepalive_s);
  put_str(body, p.client_id);
  if (p.username) put_str(body, *p.username);
  if (p.password) put_str(body, *p.password);
  put_header(out, packet_type::connect, 0, body.size());
  out += body;
}

void encode_connack(std::string& out, const connack_packet& p) {
  put_header(out, packet_type::connack, 0, 2);
  out.push_back(p.session_present ? 1 : 0);
  out.push_back(static_cast<char>(p.return_code));
}

void encode_publish(std::string& out, const publish_packet& p) {
  size_t remaining = 2 + p.topic.size() + (p.qos > 0 ? 2 : 0) + p.payload.size();
  uint8_t flags = (p.dup ? 0x8 : 0) | static_cast<uint8_t>((p.qos & 0x3) << 1) | (p.retain ? 0x1 : 0);
  put_header(out, packet_type::publish, flags, remaining);
  put_str(out, p.topic);
  if (p.qos > 0) put_u16(out, p.packet_id);
  out.append(p.payload);
}

void encode_puback(std::string& out, uint16_t packet_id) {
  put_header(out, packet_type::puback, 0, 2);
  put_u16(out, packet_id);
}

void encode_pubrec(std::string& out, uint16_t packet_id) {
  put_header(out, packet_type::pubrec, 0, 2);
  put_u16(out, packet_id);
}

void encode_pubrel(std::string& out, uint16_t packet_id) {
  put_header(out, packet_type::pubrel, 0x2, 2);  // MQTT-3.6.1-1
  put_u16(out, packet_id);
}

void encode_pubcomp(std::string& out, uint16_t packet_id) {
  put_header(out, packet_type::pubcomp, 0, 2);
  put_u16(out, packet_id);
}

void encode_subscribe(std::string& out, const subscribe_packet& p) {
  size_t remaining = 2;
  for (const auto& [filter, qos] : p.filters) remaining += 2 + filter.size() + 1;
  put_header(out, packet_type::subscribe, 0x2, remaining);
  put_u16(out, p.packet_id);
  for (const auto& [filter, qos] : p.filters) {
    put_str(out, filter);
    out.push_back(static_cast<char>(qos));
  }
}

void encode_suback(std::string& out, const suback_packet& p) {
  put_header(out, packet_type::suback, 0, 2 + p.return_codes.size());
  put_u16(out, p.packet_id);
  for (uint8_t c : p.return_codes) out.push_back(static_cast<char>(c));
}

void encode_unsubscribe(std::string& out, const unsubscribe_packet& p) {
  size_t remaining = 2;
  for (const auto& filter : p.filters) remaining += 2 + filter.size();
  put_header(out, packet_type::unsubscribe, 0x2, remaining);  // MQTT-3.10.1-1
  put_u16(out, p.packet_id);
  for (const auto& filter : p.filters) put_str(out, filter);
}

void encode_unsuback(std::string& out, uint16_t packet_id) {
  put_header(out, packet_type::unsuback, 0, 2);
  put_u16(out, packet_id);
}

void encode_pingreq(std::string& out) { put_header(out, packet_type::pingreq, 0, 0); }
void encode_pingresp(std::string& out) { put_header(out, packet_type::pingresp, 0, 0); }
void encode_disconnect(std::string& out) { put_header(out, packet_type::disconnect, 0, 0); }

}  // namespace evpipe::io::mqtt
