// Fuzz target: the MQTT codec on arbitrary bytes. Framing and parsing must
// never crash or read past the buffer, and every packet that parses must
// survive its own encoder: re-encoded, it parses to the same fields.
#include <cstdint>
#include <string>

#include "io/sources/mqtt/mqtt_codec.h"

using namespace evpipe::io::mqtt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view buf(reinterpret_cast<const char*>(data), size);
  while (!buf.empty()) {
    frame f;
    if (read_frame(buf, 1 << 16, f) != decode_status::ok) break;
    if (f.size == 0 || f.size > buf.size()) __builtin_trap();
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
