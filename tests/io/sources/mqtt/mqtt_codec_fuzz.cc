// Fuzz target: the MQTT codec on arbitrary bytes, each frame parsed as 3.1.1
// and as MQTT 5. Framing and parsing must never crash or read past the
// buffer, and every packet that parses must survive its own encoder:
// re-encoded, it parses to the same fields (MQTT 5 properties included).
#include <cstdint>
#include <string>

#include "io/sources/mqtt/mqtt_codec.h"
#include "io/sources/mqtt/mqtt_codec_v5.h"

using namespace evpipe::io::mqtt;

namespace {

bool same(const v5::properties& a, const v5::properties& b) {
  return a.content_type == b.content_type && a.user_properties == b.user_properties &&
         a.payload_format == b.payload_format && a.message_expiry == b.message_expiry &&
         a.subscription_ids == b.subscription_ids && a.topic_alias == b.topic_alias &&
         a.receive_maximum == b.receive_maximum && a.session_expiry == b.session_expiry &&
         a.server_reference == b.server_reference && a.reason_string == b.reason_string &&
         a.correlation_data == b.correlation_data && a.response_topic == b.response_topic;
}

// The same frame as MQTT 5.
void fuzz_v5(const frame& f) {
  std::string again;
  frame g;
  switch (f.type) {
    case packet_type::publish: {
      publish_packet p, q;
      v5::properties pp, qp;
      if (v5::parse_publish(f, p, pp) != decode_status::ok) break;
      v5::encode_publish(again, p, pp);
      if (read_frame(again, 1 << 17, g) != decode_status::ok || v5::parse_publish(g, q, qp) != decode_status::ok ||
          q.topic != p.topic || q.payload != p.payload || q.qos != p.qos || q.packet_id != p.packet_id ||
          !same(pp, qp)) {
        __builtin_trap();
      }
      break;
    }
    case packet_type::connect: {
      v5::connect_packet p, q;
      v5::properties pp, qp;
      if (v5::parse_connect(f, p, pp) != decode_status::ok) break;
      v5::encode_connect(again, p);
      if (read_frame(again, 1 << 17, g) != decode_status::ok || v5::parse_connect(g, q, qp) != decode_status::ok ||
          q.client_id != p.client_id || q.session_expiry_s != p.session_expiry_s ||
          q.receive_maximum != p.receive_maximum || q.password != p.password) {
        __builtin_trap();
      }
      break;
    }
    case packet_type::connack: {
      v5::connack_packet p, q;
      if (v5::parse_connack(f, p) != decode_status::ok) break;
      v5::encode_connack(again, p);
      if (read_frame(again, 1 << 17, g) != decode_status::ok || v5::parse_connack(g, q) != decode_status::ok ||
          q.reason != p.reason || q.session_present != p.session_present || !same(p.props, q.props)) {
        __builtin_trap();
      }
      break;
    }
    case packet_type::puback:
    case packet_type::pubrec:
    case packet_type::pubrel:
    case packet_type::pubcomp: {
      v5::ack_packet p, q;
      if (v5::parse_ack(f, p) != decode_status::ok) break;
      v5::encode_ack(again, f.type, p);
      if (read_frame(again, 1 << 17, g) != decode_status::ok || v5::parse_ack(g, q) != decode_status::ok ||
          q.packet_id != p.packet_id || q.reason != p.reason || !same(p.props, q.props)) {
        __builtin_trap();
      }
      break;
    }
    case packet_type::subscribe: {
      subscribe_packet p, q;
      v5::properties pp, qp;
      if (v5::parse_subscribe(f, p, pp) != decode_status::ok) break;
      v5::encode_subscribe(again, p, pp);
      if (read_frame(again, 1 << 17, g) != decode_status::ok || v5::parse_subscribe(g, q, qp) != decode_status::ok ||
          q.filters != p.filters || !same(pp, qp)) {
        __builtin_trap();
      }
      break;
    }
    case packet_type::suback: {
      suback_packet p;
      v5::properties pp;
      (void)v5::parse_suback(f, p, pp);
      break;
    }
    case packet_type::unsuback: {
      suback_packet p;
      v5::properties pp;
      (void)v5::parse_unsuback(f, p, pp);
      break;
    }
    case packet_type::unsubscribe: {
      unsubscribe_packet p;
      v5::properties pp;
      (void)v5::parse_unsubscribe(f, p, pp);
      break;
    }
    case packet_type::disconnect: {
      v5::disconnect_packet p, q;
      if (v5::parse_disconnect(f, p) != decode_status::ok) break;
      v5::encode_disconnect(again, p);
      if (read_frame(again, 1 << 17, g) != decode_status::ok || v5::parse_disconnect(g, q) != decode_status::ok ||
          q.reason != p.reason) {
        __builtin_trap();
      }
      break;
    }
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view buf(reinterpret_cast<const char*>(data), size);
  while (!buf.empty()) {
    frame f;
    if (read_frame(buf, 1 << 16, f) != decode_status::ok) break;
    if (f.size == 0 || f.size > buf.size()) __builtin_trap();
    fuzz_v5(f);
    std::string again;
    frame g;
    switch (f.type) {
      case packet_type::publish: {
        publish_packet p, q;
        if (parse_publish(f, p) != decode_status::ok) break;
        encode_publish(again, p);
        if (read_frame(again, 1 << 17, g) != decode_status::ok || parse_publish(g, q) != decode_status::ok ||
            q.topic != p.topic || q.payload != p.payload || q.qos != p.qos || q.packet_id != p.packet_id) {
          __builtin_trap();
        }
        break;
      }
      case packet_type::subscribe: {
        subscribe_packet p, q;
        if (parse_subscribe(f, p) != decode_status::ok) break;
        encode_subscribe(again, p);
        if (read_frame(again, 1 << 17, g) != decode_status::ok || parse_subscribe(g, q) != decode_status::ok ||
            q.filters != p.filters || q.packet_id != p.packet_id) {
          __builtin_trap();
        }
        break;
      }
      case packet_type::connect: {
        connect_packet p, q;
        if (parse_connect(f, p) != decode_status::ok) break;
        encode_connect(again, p);
        if (read_frame(again, 1 << 17, g) != decode_status::ok || parse_connect(g, q) != decode_status::ok ||
            q.client_id != p.client_id || q.username != p.username || q.password != p.password) {
          __builtin_trap();
        }
        break;
      }
      case packet_type::connack: {
        connack_packet p;
        (void)parse_connack(f, p);
        break;
      }
      case packet_type::suback: {
        suback_packet p;
        (void)parse_suback(f, p);
        break;
      }
      case packet_type::puback:
      case packet_type::pubrec:
      case packet_type::pubrel:
      case packet_type::pubcomp: {
        // The acknowledgements of QoS 1 and 2 round-trip through their encoders.
        uint16_t id = 0, id2 = 0;
        if (parse_packet_id(f, id) != decode_status::ok) break;
        if (f.type == packet_type::puback) encode_puback(again, id);
        if (f.type == packet_type::pubrec) encode_pubrec(again, id);
        if (f.type == packet_type::pubrel) encode_pubrel(again, id);
        if (f.type == packet_type::pubcomp) encode_pubcomp(again, id);
        // Not the same size: a remaining length may arrive in more bytes than
        // it needs (0x82 0x00 for 2), and the encoder writes the fewest.
        if (read_frame(again, 1 << 17, g) != decode_status::ok || g.type != f.type ||
            parse_packet_id(g, id2) != decode_status::ok || id2 != id || again.size() > f.size) {
          __builtin_trap();
        }
        break;
      }
      default: {
        uint16_t id;
        (void)parse_packet_id(f, id);
        break;
      }
    }
    buf.remove_prefix(f.size);
  }
  return 0;
}
