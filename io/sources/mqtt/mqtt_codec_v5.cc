#include "io/sources/mqtt/mqtt_codec_v5.h"

#include <simdjson.h>

namespace evpipe::io::mqtt::v5 {

namespace {

// Bounds-checked big-endian reads; any read past the end fails the reader.
struct reader {
  std::string_view in;
  size_t pos = 0;
  bool failed = false;

  [[nodiscard]] size_t left() const noexcept { return in.size() - pos; }
  uint8_t u8() noexcept {
    if (left() < 1) return failed = true, 0;
    return static_cast<uint8_t>(in[pos++]);
  }
  uint16_t u16() noexcept {
    if (left() < 2) return failed = true, 0;
    uint16_t v = static_cast<uint16_t>(static_cast<uint8_t>(in[pos]) << 8 | static_cast<uint8_t>(in[pos + 1]));
    pos += 2;
    return v;
  }
  uint32_t u32() noexcept {
    uint32_t hi = u16();
    return hi << 16 | u16();
  }
  std::string_view bytes() noexcept {  // two-byte length, then the bytes
    uint16_t n = u16();
    if (failed || left() < n) return failed = true, std::string_view{};
    std::string_view s = in.substr(pos, n);
    pos += n;
    return s;
  }
  std::string_view utf8() noexcept {
    std::string_view s = bytes();
    if (!failed && (s.find('\0') != std::string_view::npos || !simdjson::validate_utf8(s.data(), s.size()))) {
      failed = true;
    }
    return s;
  }
};

void put_u16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}
void put_u32(std::string& out, uint32_t v) {
  put_u16(out, static_cast<uint16_t>(v >> 16));
  put_u16(out, static_cast<uint16_t>(v & 0xffff));
}
void put_str(std::string& out, std::string_view s) {
  put_u16(out, static_cast<uint16_t>(s.size()));
  out.append(s);
}
void put_header(std::string& out, packet_type t, uint8_t flags, size_t remaining) {
  out.push_back(static_cast<char>(static_cast<uint8_t>(t) << 4 | (flags & 0x0f)));
  encode_varint(out, static_cast<uint32_t>(remaining));
}

// Which properties each packet may carry (MQTT 5 table 2-4), as bit masks
// over the property ids (all below 64).
constexpr uint64_t bit(unsigned id) { return uint64_t{1} << id; }
constexpr uint64_t connect_props = bit(0x11) | bit(0x21) | bit(0x27) | bit(0x22) | bit(0x19) | bit(0x17) |
                                   bit(0x26) | bit(0x15) | bit(0x16);
constexpr uint64_t connack_props = bit(0x11) | bit(0x21) | bit(0x24) | bit(0x25) | bit(0x27) | bit(0x12) |
                                   bit(0x22) | bit(0x1F) | bit(0x26) | bit(0x28) | bit(0x29) | bit(0x2A) |
                                   bit(0x13) | bit(0x1A) | bit(0x1C) | bit(0x15) | bit(0x16);
constexpr uint64_t publish_props = bit(0x01) | bit(0x02) | bit(0x23) | bit(0x08) | bit(0x09) | bit(0x26) |
                                   bit(0x0B) | bit(0x03);
constexpr uint64_t ack_props = bit(0x1F) | bit(0x26);  // PUBACK..PUBCOMP, SUBACK, UNSUBACK
constexpr uint64_t subscribe_props = bit(0x0B) | bit(0x26);
constexpr uint64_t unsubscribe_props = bit(0x26);
constexpr uint64_t disconnect_props = bit(0x11) | bit(0x1F) | bit(0x26) | bit(0x1C);

decode_status read_props(std::string_view in, size_t& pos, properties& out, uint64_t allowed) {
  out = properties{};
  uint32_t len = 0;
  if (read_varint(in, pos, len) != decode_status::ok || in.size() - pos < len) return decode_status::malformed;
  reader r{in.substr(0, pos + len), pos};
  uint64_t seen = 0;
  while (!r.failed && r.pos < pos + len) {
    size_t at = r.pos;
    uint32_t id = 0;
    if (read_varint(r.in, at, id) != decode_status::ok) return decode_status::malformed;
    r.pos = at;
    if (id >= 64 || !(allowed & bit(id))) return decode_status::malformed;
    bool repeats = id == 0x26 || id == 0x0B;
    if (!repeats && (seen & bit(id))) return decode_status::malformed;  // a property twice (protocol error)
    seen |= bit(id);
    auto flag = [&](std::optional<uint8_t>& f) {
      uint8_t v = r.u8();
      if (v > 1) r.failed = true;
      f = v;
    };
    switch (id) {
      case 0x01: flag(out.payload_format); break;
      case 0x02: out.message_expiry = r.u32(); break;
      case 0x03: out.content_type = r.utf8(); break;
      case 0x08: out.response_topic = r.utf8(); break;
      case 0x09: out.correlation_data = r.bytes(); break;
      case 0x0B: {
        uint32_t v = 0;
        size_t p = r.pos;
        if (read_varint(r.in, p, v) != decode_status::ok || v == 0) return decode_status::malformed;
        r.pos = p;
        out.subscription_ids.push_back(v);
        break;
      }
      case 0x11: out.session_expiry = r.u32(); break;
      case 0x12: out.assigned_client_id = r.utf8(); break;
      case 0x13: out.server_keep_alive = r.u16(); break;
      case 0x15: out.auth_method = r.utf8(); break;
      case 0x16: out.auth_data = r.bytes(); break;
      case 0x17: flag(out.request_problem_info); break;
      case 0x18: out.will_delay = r.u32(); break;
      case 0x19: flag(out.request_response_info); break;
      case 0x1A: out.response_info = r.utf8(); break;
      case 0x1C: out.server_reference = r.utf8(); break;
      case 0x1F: out.reason_string = r.utf8(); break;
      case 0x21:
        out.receive_maximum = r.u16();
        if (*out.receive_maximum == 0) r.failed = true;
        break;
      case 0x22: out.topic_alias_maximum = r.u16(); break;
      case 0x23:
        out.topic_alias = r.u16();
        if (*out.topic_alias == 0) r.failed = true;
        break;
      case 0x24: flag(out.maximum_qos); break;
      case 0x25: flag(out.retain_available); break;
      case 0x26: {
        std::string_view k = r.utf8();
        std::string_view v = r.utf8();
        if (!r.failed) out.user_properties.emplace_back(k, v);
        break;
      }
      case 0x27:
        out.maximum_packet_size = r.u32();
        if (*out.maximum_packet_size == 0) r.failed = true;
        break;
      case 0x28: flag(out.wildcard_sub_available); break;
      case 0x29: flag(out.sub_id_available); break;
      case 0x2A: flag(out.shared_sub_available); break;
      default: return decode_status::malformed;
    }
  }
  if (r.failed || r.pos != pos + len) return decode_status::malformed;
  pos = r.pos;
  return decode_status::ok;
}

bool is_ack(packet_type t) {
  return t == packet_type::puback || t == packet_type::pubrec || t == packet_type::pubrel || t == packet_type::pubcomp;
}

// The reason codes a packet may carry (MQTT 5 section 2.4, per packet).
bool valid_ack_reason(packet_type t, uint8_t c) {
  if (t == packet_type::pubrel || t == packet_type::pubcomp) return c == 0x00 || c == 0x92;
  switch (c) {
    case 0x00: case 0x10: case 0x80: case 0x83: case 0x87: case 0x90: case 0x91: case 0x97: case 0x99: return true;
    default: return false;
  }
}
bool valid_suback_reason(uint8_t c) {
  switch (c) {
    case 0x00: case 0x01: case 0x02: case 0x80: case 0x83: case 0x87: case 0x8F: case 0x91: case 0x97: case 0x9E:
    case 0xA1: case 0xA2: return true;
    default: return false;
  }
}
bool valid_unsuback_reason(uint8_t c) {
  return c == 0x00 || c == 0x11 || c == 0x80 || c == 0x83 || c == 0x87 || c == 0x8F || c == 0x91;
}

}  // namespace

void encode_varint(std::string& out, uint32_t v) { encode_remaining_length(out, v); }

decode_status read_varint(std::string_view in, size_t& pos, uint32_t& v) noexcept {
  v = 0;
  uint32_t multiplier = 1;
  for (int i = 0; i < 4; ++i) {
    if (pos >= in.size()) return decode_status::malformed;
    uint8_t b = static_cast<uint8_t>(in[pos++]);
    v += (b & 0x7f) * multiplier;
    if (!(b & 0x80)) return decode_status::ok;
    multiplier *= 128;
  }
  return decode_status::malformed;  // a fifth byte
}

void encode_properties(std::string& out, const properties& p) {
  std::string b;
  auto byte = [&](uint8_t id, const std::optional<uint8_t>& v) {
    if (v) b.push_back(static_cast<char>(id)), b.push_back(static_cast<char>(*v));
  };
  auto two = [&](uint8_t id, const std::optional<uint16_t>& v) {
    if (v) b.push_back(static_cast<char>(id)), put_u16(b, *v);
  };
  auto four = [&](uint8_t id, const std::optional<uint32_t>& v) {
    if (v) b.push_back(static_cast<char>(id)), put_u32(b, *v);
  };
  auto str = [&](uint8_t id, const std::optional<std::string_view>& v) {
    if (v) b.push_back(static_cast<char>(id)), put_str(b, *v);
  };
  byte(0x01, p.payload_format);
  four(0x02, p.message_expiry);
  str(0x03, p.content_type);
  str(0x08, p.response_topic);
  str(0x09, p.correlation_data);
  for (uint32_t id : p.subscription_ids) b.push_back(0x0B), encode_varint(b, id);
  four(0x11, p.session_expiry);
  str(0x12, p.assigned_client_id);
  two(0x13, p.server_keep_alive);
  str(0x15, p.auth_method);
  str(0x16, p.auth_data);
  byte(0x17, p.request_problem_info);
  four(0x18, p.will_delay);
  byte(0x19, p.request_response_info);
  str(0x1A, p.response_info);
  str(0x1C, p.server_reference);
  str(0x1F, p.reason_string);
  two(0x21, p.receive_maximum);
  two(0x22, p.topic_alias_maximum);
  two(0x23, p.topic_alias);
  byte(0x24, p.maximum_qos);
  byte(0x25, p.retain_available);
  for (const auto& [k, v] : p.user_properties) b.push_back(0x26), put_str(b, k), put_str(b, v);
  four(0x27, p.maximum_packet_size);
  byte(0x28, p.wildcard_sub_available);
  byte(0x29, p.sub_id_available);
  byte(0x2A, p.shared_sub_available);
  encode_varint(out, static_cast<uint32_t>(b.size()));
  out += b;
}

decode_status read_properties(std::string_view in, size_t& pos, properties& out) {
  return read_props(in, pos, out, ~uint64_t{0} & ~bit(0));
}

void encode_connect(std::string& out, const connect_packet& p) {
  std::string body;
  put_str(body, "MQTT");
  body.push_back(static_cast<char>(protocol_level));
  uint8_t flags = (p.clean_start ? 0x02 : 0) | (p.username ? 0x80 : 0) | (p.password ? 0x40 : 0);
  body.push_back(static_cast<char>(flags));
  put_u16(body, p.keepalive_s);
  properties props;
  if (p.session_expiry_s != 0) props.session_expiry = p.session_expiry_s;
  if (p.receive_maximum != 65535) props.receive_maximum = p.receive_maximum;
  encode_properties(body, props);
  put_str(body, p.client_id);
  if (p.username) put_str(body, *p.username);
  if (p.password) put_str(body, *p.password);
  put_header(out, packet_type::connect, 0, body.size());
  out += body;
}

decode_status parse_connect(const frame& f, connect_packet& out, properties& props) {
  if (f.type != packet_type::connect) return decode_status::malformed;
  reader r{f.body};
  if (r.bytes() != "MQTT") return decode_status::malformed;
  if (r.u8() != protocol_level) return decode_status::unsupported;
  uint8_t cflags = r.u8();
  if (cflags & 0x01) return decode_status::malformed;
  if (cflags & 0x04) return decode_status::unsupported;  // will
  if (cflags & 0x38) return decode_status::malformed;
  out.clean_start = cflags & 0x02;
  out.keepalive_s = r.u16();
  if (r.failed || read_props(f.body, r.pos, props, connect_props) != decode_status::ok) return decode_status::malformed;
  out.session_expiry_s = props.session_expiry.value_or(0);
  out.receive_maximum = props.receive_maximum.value_or(65535);
  std::string_view id = r.utf8();
  if (r.failed) return decode_status::malformed;
  out.client_id.assign(id);
  out.username.reset();
  out.password.reset();
  if (cflags & 0x80) {
    std::string_view u = r.utf8();
    if (r.failed) return decode_status::malformed;
    out.username.emplace(u);
  }
  if (cflags & 0x40) {
    std::string_view pw = r.bytes();  // MQTT 5 lets a password come without a user name
    if (r.failed) return decode_status::malformed;
    out.password.emplace(pw);
  }
  return r.left() != 0 ? decode_status::malformed : decode_status::ok;
}

decode_status parse_connack(const frame& f, connack_packet& out) {
  if (f.type != packet_type::connack) return decode_status::malformed;
  reader r{f.body};
  uint8_t ack_flags = r.u8();
  out.reason = r.u8();
  if (r.failed || (ack_flags & 0xfe)) return decode_status::malformed;
  out.session_present = ack_flags & 1;
  if (out.session_present && out.reason != 0) return decode_status::malformed;  // MQTT-3.2.2-6
  if (out.reason != 0 && out.reason < 0x80) return decode_status::malformed;
  if (read_props(f.body, r.pos, out.props, connack_props) != decode_status::ok) return decode_status::malformed;
  return r.pos != f.body.size() ? decode_status::malformed : decode_status::ok;
}

void encode_connack(std::string& out, const connack_packet& p) {
  std::string body;
  body.push_back(p.session_present ? 1 : 0);
  body.push_back(static_cast<char>(p.reason));
  encode_properties(body, p.props);
  put_header(out, packet_type::connack, 0, body.size());
  out += body;
}

decode_status parse_publish(const frame& f, publish_packet& out, properties& props) {
  if (f.type != packet_type::publish) return decode_status::malformed;
  out.retain = f.flags & 0x1;
  out.qos = (f.flags >> 1) & 0x3;
  out.dup = f.flags & 0x8;
  if (out.qos == 3 || (out.qos == 0 && out.dup)) return decode_status::malformed;
  reader r{f.body};
  out.topic = r.bytes();
  // An empty topic name is allowed only with a topic alias (checked by the
  // caller, which announced no aliases).
  if (r.failed || (!out.topic.empty() && !valid_topic_name(out.topic))) return decode_status::malformed;
  out.packet_id = 0;
  if (out.qos > 0) {
    out.packet_id = r.u16();
    if (r.failed || out.packet_id == 0) return decode_status::malformed;
  }
  if (read_props(f.body, r.pos, props, publish_props) != decode_status::ok) return decode_status::malformed;
  if (out.topic.empty() && !props.topic_alias) return decode_status::malformed;
  out.payload = f.body.substr(r.pos);
  return decode_status::ok;
}

void encode_publish(std::string& out, const publish_packet& p, const properties& props) {
  std::string pb;
  encode_properties(pb, props);
  size_t remaining = 2 + p.topic.size() + (p.qos > 0 ? 2 : 0) + pb.size() + p.payload.size();
  uint8_t flags = (p.dup ? 0x8 : 0) | static_cast<uint8_t>((p.qos & 0x3) << 1) | (p.retain ? 0x1 : 0);
  put_header(out, packet_type::publish, flags, remaining);
  put_str(out, p.topic);
  if (p.qos > 0) put_u16(out, p.packet_id);
  out += pb;
  out.append(p.payload);
}

decode_status parse_ack(const frame& f, ack_packet& out) {
  if (!is_ack(f.type)) return decode_status::malformed;
  reader r{f.body};
  out.packet_id = r.u16();
  out.reason = 0;
  out.props = properties{};
  if (r.failed || out.packet_id == 0) return decode_status::malformed;
  if (r.left() == 0) return decode_status::ok;  // short form: success
  out.reason = r.u8();
  if (!valid_ack_reason(f.type, out.reason)) return decode_status::malformed;
  if (r.left() == 0) return decode_status::ok;
  if (read_props(f.body, r.pos, out.props, ack_props) != decode_status::ok) return decode_status::malformed;
  return r.pos != f.body.size() ? decode_status::malformed : decode_status::ok;
}

void encode_ack(std::string& out, packet_type type, const ack_packet& p) {
  std::string pb;
  bool props = !p.props.reason_string && p.props.user_properties.empty() ? false : true;
  if (props) encode_properties(pb, p.props);
  size_t remaining = 2 + (p.reason != 0 || props ? 1 : 0) + pb.size();
  put_header(out, type, type == packet_type::pubrel ? 0x2 : 0, remaining);
  put_u16(out, p.packet_id);
  if (p.reason != 0 || props) out.push_back(static_cast<char>(p.reason));
  out += pb;
}

void encode_subscribe(std::string& out, const subscribe_packet& p, const properties& props) {
  std::string body;
  put_u16(body, p.packet_id);
  encode_properties(body, props);
  for (const auto& [filter, qos] : p.filters) {
    put_str(body, filter);
    body.push_back(static_cast<char>(qos & 0x3));  // no local, retain as published, retain handling: 0
  }
  put_header(out, packet_type::subscribe, 0x2, body.size());
  out += body;
}

decode_status parse_subscribe(const frame& f, subscribe_packet& out, properties& props) {
  if (f.type != packet_type::subscribe) return decode_status::malformed;
  reader r{f.body};
  out.packet_id = r.u16();
  if (r.failed || out.packet_id == 0) return decode_status::malformed;
  if (read_props(f.body, r.pos, props, subscribe_props) != decode_status::ok) return decode_status::malformed;
  out.filters.clear();
  while (r.left() > 0) {
    std::string_view filter = r.bytes();
    uint8_t options = r.u8();
    // Bits 6-7 reserved, retain handling 3 is a protocol error.
    if (r.failed || !valid_topic_filter(filter) || (options & 0xC0) || (options & 0x3) == 3 ||
        ((options >> 4) & 0x3) == 3) {
      return decode_status::malformed;
    }
    out.filters.emplace_back(std::string(filter), options & 0x3);
  }
  return out.filters.empty() ? decode_status::malformed : decode_status::ok;
}

namespace {

// SUBACK and UNSUBACK: a packet id, properties, then one reason code per
// filter (at least one), each of them one `valid` accepts.
decode_status parse_reason_list(const frame& f, packet_type type, bool (*valid)(uint8_t), suback_packet& out,
                                properties& props) {
  if (f.type != type) return decode_status::malformed;
  reader r{f.body};
  out.packet_id = r.u16();
  if (r.failed || out.packet_id == 0) return decode_status::malformed;
  if (read_props(f.body, r.pos, props, ack_props) != decode_status::ok) return decode_status::malformed;
  out.return_codes.clear();
  while (r.left() > 0) {
    uint8_t c = r.u8();
    if (!valid(c)) return decode_status::malformed;
    out.return_codes.push_back(c);
  }
  return out.return_codes.empty() ? decode_status::malformed : decode_status::ok;
}

void encode_reason_list(std::string& out, packet_type type, const suback_packet& p, const properties& props) {
  std::string body;
  put_u16(body, p.packet_id);
  encode_properties(body, props);
  for (uint8_t c : p.return_codes) body.push_back(static_cast<char>(c));
  put_header(out, type, 0, body.size());
  out += body;
}

}  // namespace

decode_status parse_suback(const frame& f, suback_packet& out, properties& props) {
  return parse_reason_list(f, packet_type::suback, valid_suback_reason, out, props);
}

void encode_suback(std::string& out, const suback_packet& p, const properties& props) {
  encode_reason_list(out, packet_type::suback, p, props);
}

void encode_unsubscribe(std::string& out, const unsubscribe_packet& p, const properties& props) {
  std::string body;
  put_u16(body, p.packet_id);
  encode_properties(body, props);
  for (const auto& filter : p.filters) put_str(body, filter);
  put_header(out, packet_type::unsubscribe, 0x2, body.size());
  out += body;
}

decode_status parse_unsubscribe(const frame& f, unsubscribe_packet& out, properties& props) {
  if (f.type != packet_type::unsubscribe) return decode_status::malformed;
  reader r{f.body};
  out.packet_id = r.u16();
  if (r.failed || out.packet_id == 0) return decode_status::malformed;
  if (read_props(f.body, r.pos, props, unsubscribe_props) != decode_status::ok) return decode_status::malformed;
  out.filters.clear();
  while (r.left() > 0) {
    std::string_view filter = r.bytes();
    if (r.failed || !valid_topic_filter(filter)) return decode_status::malformed;
    out.filters.emplace_back(filter);
  }
  return out.filters.empty() ? decode_status::malformed : decode_status::ok;
}

decode_status parse_unsuback(const frame& f, suback_packet& out, properties& props) {
  return parse_reason_list(f, packet_type::unsuback, valid_unsuback_reason, out, props);
}

void encode_unsuback(std::string& out, const suback_packet& p, const properties& props) {
  encode_reason_list(out, packet_type::unsuback, p, props);
}

decode_status parse_disconnect(const frame& f, disconnect_packet& out) {
  if (f.type != packet_type::disconnect) return decode_status::malformed;
  out = disconnect_packet{};
  if (f.body.empty()) return decode_status::ok;  // 0x00, normal disconnection
  reader r{f.body};
  out.reason = r.u8();
  if (out.reason != 0x00 && out.reason != 0x04 && out.reason < 0x80) return decode_status::malformed;
  if (r.left() == 0) return decode_status::ok;
  if (read_props(f.body, r.pos, out.props, disconnect_props) != decode_status::ok) return decode_status::malformed;
  return r.pos != f.body.size() ? decode_status::malformed : decode_status::ok;
}

void encode_disconnect(std::string& out, const disconnect_packet& p) {
  std::string pb;
  bool props = p.props.session_expiry || p.props.reason_string || !p.props.user_properties.empty() ||
               p.props.server_reference;
  if (props) encode_properties(pb, p.props);
  if (p.reason == 0 && !props) {
    put_header(out, packet_type::disconnect, 0, 0);  // the short form, as 3.1.1's
    return;
  }
  put_header(out, packet_type::disconnect, 0, 1 + pb.size());
  out.push_back(static_cast<char>(p.reason));
  out += pb;
}

const char* reason_name(uint8_t code) noexcept {
  switch (code) {
    case 0x00: return "success";
    case 0x04: return "disconnect with will message";
    case 0x10: return "no matching subscribers";
    case 0x11: return "no subscription existed";
    case 0x80: return "unspecified error";
    case 0x81: return "malformed packet";
    case 0x82: return "protocol error";
    case 0x83: return "implementation specific error";
    case 0x84: return "unsupported protocol version";
    case 0x85: return "client identifier not valid";
    case 0x86: return "bad user name or password";
    case 0x87: return "not authorized";
    case 0x88: return "server unavailable";
    case 0x89: return "server busy";
    case 0x8A: return "banned";
    case 0x8B: return "server shutting down";
    case 0x8C: return "bad authentication method";
    case 0x8D: return "keep alive timeout";
    case 0x8E: return "session taken over";
    case 0x8F: return "topic filter invalid";
    case 0x90: return "topic name invalid";
    case 0x91: return "packet identifier in use";
    case 0x92: return "packet identifier not found";
    case 0x93: return "receive maximum exceeded";
    case 0x94: return "topic alias invalid";
    case 0x95: return "packet too large";
    case 0x96: return "message rate too high";
    case 0x97: return "quota exceeded";
    case 0x98: return "administrative action";
    case 0x99: return "payload format invalid";
    case 0x9A: return "retain not supported";
    case 0x9B: return "QoS not supported";
    case 0x9C: return "use another server";
    case 0x9D: return "server moved";
    case 0x9E: return "shared subscriptions not supported";
    case 0x9F: return "connection rate exceeded";
    case 0xA0: return "maximum connect time";
    case 0xA1: return "subscription identifiers not supported";
    case 0xA2: return "wildcard subscriptions not supported";
    default: return "unknown reason code";
  }
}

}  // namespace evpipe::io::mqtt::v5
