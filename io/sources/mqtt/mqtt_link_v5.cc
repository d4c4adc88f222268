// The MQTT 5 parts of an mqtt_link (protocol = "5"): CONNECT with session
// expiry and Receive Maximum, what CONNACK says, the checks on a PUBLISH, and
// a DISCONNECT from the broker. The packets are mqtt_codec_v5's; everything
// else (ordering, acks after commit, backoff) is the link's, unchanged.
//
// Choices (docs/mqtt.md, "MQTT 5"):
// - Receive Maximum = min(max_inflight, 65535): the broker, not evpipe's read
//   loop, holds back QoS 1 and 2 messages past it; a broker that sends more is
//   a protocol violation (DISCONNECT 0x93, reconnect with backoff).
// - No Maximum Packet Size is announced: a broker drops a larger message
//   without telling anyone, while evpipe dead-letters it (too_large) so it is
//   never lost silently.
// - Topic Alias Maximum stays 0 (absent): a PUBLISH with an alias is a
//   violation.
// - Server redirection (CONNACK or DISCONNECT 0x9C/0x9D with a Server
//   Reference) is not followed: it is logged, and the configured url is
//   retried with backoff, so a broker cannot send evpipe's credentials
//   elsewhere.
// - AUTH (enhanced authentication) is not supported: a clear error.

#include <spdlog/spdlog.h>

#include <algorithm>

#include "io/sources/mqtt/mqtt_link.h"
#include "stages/json_text.h"
#include "stages/tenant/binding.h"

namespace evpipe::io {

namespace {

std::string reason_text(uint8_t code, const mqtt::v5::properties& props) {
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", code);
  std::string out = std::string(mqtt::v5::reason_name(code)) + " (" + hex + ")";
  if (props.reason_string) out += ": " + std::string(*props.reason_string);
  if (props.server_reference) {
    out += "; it names another server, \"" + std::string(*props.server_reference) +
           "\", which evpipe does not follow (the configured url is retried)";
  }
  return out;
}

}  // namespace

void mqtt_link::encode_connect_v5() {
  const auto& cfg = sh_.cfg;
  mqtt::v5::connect_packet c;
  c.client_id = client_id_;
  c.clean_start = false;  // resume the session the broker kept
  c.keepalive_s = static_cast<uint16_t>(cfg.keepalive_s);
  c.session_expiry_s = cfg.session_expiry_s;
  receive_maximum_ = static_cast<uint16_t>(std::min<uint32_t>(cfg.max_inflight, 65535));
  c.receive_maximum = receive_maximum_;
  if (!cfg.username.empty()) c.username = cfg.username;
  if (!cfg.password.empty()) c.password = cfg.password;
  mqtt::v5::encode_connect(pending_, c);
}

bool mqtt_link::accept_connack_v5(const mqtt::frame& f, std::string& why) {
  mqtt::v5::connack_packet ack;
  if (f.type != mqtt::packet_type::connack || mqtt::v5::parse_connack(f, ack) != mqtt::decode_status::ok) {
    why = "the broker's first packet was not a valid MQTT 5 CONNACK";
    bad_connack_ = true;
    return false;
  }
  if (ack.reason != 0) {
    why = "the broker refused the connection: " + reason_text(ack.reason, ack.props);
    if (ack.reason == 0x84) why += " (set protocol = \"3.1.1\" for this broker)";
    if (ack.reason == 0x8C) why += " (evpipe does not support enhanced authentication)";
    connack_refused_ = true;
    return false;
  }
  session_present_ = ack.session_present;
  const auto& cfg = sh_.cfg;
  if (ack.props.server_keep_alive) {
    // MQTT-3.2.2-21: the client uses the broker's value, and 0 turns the
    // keep alive off (3.1.2.10). A PINGREQ is allowed at any time, so evpipe
    // pings at the shorter of the broker's and its own keepalive_s, to notice
    // a broker that went away. Taken as a keep alive of 0 s, it pinged every
    // tick and gave the broker up the first time a PINGRESP took longer.
    const uint32_t server = *ack.props.server_keep_alive;
    keepalive_s_ = server == 0 ? cfg.keepalive_s : std::min<uint32_t>(server, cfg.keepalive_s);
    if (server == 0) {
      spdlog::info("mqtt {} ({}): the broker turns the keep alive off (Server Keep Alive 0); evpipe keeps its own "
                   "keep alive of {} s to notice a broker that went away",
                   cfg.url, client_id_, cfg.keepalive_s);
    } else if (server != cfg.keepalive_s) {
      spdlog::info("mqtt {} ({}): the broker sets the keep alive to {} s (asked {} s); evpipe uses {} s", cfg.url,
                   client_id_, server, cfg.keepalive_s, keepalive_s_);
    }
  }
  if (ack.props.maximum_qos && *ack.props.maximum_qos < cfg.qos) {
    spdlog::warn("mqtt {} ({}): the broker supports QoS up to {} (qos = {} asked): its SUBACK grants less", cfg.url,
                 client_id_, *ack.props.maximum_qos, cfg.qos);
  }
  if (!cfg.shared_group.empty() && ack.props.shared_sub_available && *ack.props.shared_sub_available == 0) {
    // MQTT 5 lets the broker say so; the probe after SUBACK still runs.
    spdlog::error("mqtt {} ({}): the broker says it has no shared subscriptions (Shared Subscription Available = 0): "
                  "shared_group \"{}\" will deliver nothing",
                  cfg.url, client_id_, cfg.shared_group);
  }
  if (ack.props.session_expiry && *ack.props.session_expiry != cfg.session_expiry_s) {
    spdlog::warn("mqtt {} ({}): the broker keeps the session for {} s after a disconnect (asked {} s)", cfg.url,
                 client_id_, *ack.props.session_expiry, cfg.session_expiry_s);
  }
  return true;
}

bool mqtt_link::check_publish_v5(const mqtt::publish_packet& p, std::string& why) {
  if (props_.topic_alias) {
    why = "the broker used a topic alias, though evpipe allows none (Topic Alias Maximum 0)";
    return false;
  }
  bool redelivered_qos2 = p.qos == 2 && state_.awaiting_pubrel.contains(p.packet_id);
  if (p.qos > 0 && !redelivered_qos2 && qos_unacked_ + state_.awaiting_pubrel.size() >= receive_maximum_) {
    why = "the broker exceeded evpipe's Receive Maximum of " + std::to_string(receive_maximum_);
    mqtt::v5::encode_disconnect(pending_, {0x93, {}});
    flush();
    return false;
  }
  take_tenant_property(props_);
  // The content type and user properties travel with the event into its row
  // (the headers column, docs/mqtt.md) and into a dlq_publish republish.
  // Built only for a message that has them: the others cost nothing.
  properties_json_.clear();
  if (props_.content_type || !props_.user_properties.empty()) {
    std::string& j = properties_json_;
    j = "{";
    if (props_.content_type) {
      j += "\"content_type\":";
      stages::append_json_string(j, *props_.content_type);
    }
    if (!props_.user_properties.empty()) {
      j += props_.content_type ? ",\"user_properties\":[" : "\"user_properties\":[";
      for (size_t i = 0; i < props_.user_properties.size(); ++i) {
        j += i ? ",[" : "[";
        stages::append_json_string(j, props_.user_properties[i].first);
        j += ",";
        stages::append_json_string(j, props_.user_properties[i].second);
        j += "]";
      }
      j += "]";
    }
    j += "}";
  }
  return true;
}

void mqtt_link::take_tenant_property(const mqtt::v5::properties& props) {
  // tenant_property (docs/tenants.md): the first user property of that name
  // is the message's credential; a message without one has none from here
  // (its claim decides). Set for every message, so none inherits the last
  // message's tenant.
  if (!sh_.tenancy || sh_.tenancy->property().empty()) return;
  std::string_view tenant;
  for (const auto& [name, value] : props.user_properties) {
    if (name == sh_.tenancy->property()) {
      tenant = value;
      break;
    }
  }
  intake_.set_credential(tenant);
}

bool mqtt_link::tenant_of_oversized_v5(std::string_view avail, size_t props_at, std::string& why) {
  if (!sh_.tenancy || sh_.tenancy->property().empty()) return true;
  mqtt::v5::properties props;
  if (mqtt::v5::read_properties(avail, props_at, props) != mqtt::decode_status::ok) {
    why = "malformed PUBLISH from the broker";
    return false;
  }
  take_tenant_property(props);
  return true;
}

link_end mqtt_link::broker_disconnect_v5(const mqtt::frame& f, std::string& why) {
  mqtt::v5::disconnect_packet d;
  if (mqtt::v5::parse_disconnect(f, d) != mqtt::decode_status::ok) {
    why = "malformed DISCONNECT from the broker";
    return link_end::violation;
  }
  why = "the broker disconnected: " + reason_text(d.reason, d.props);
  // A takeover by another client with our id: the session's takeover logic
  // (backoff, one warning) handles it like a silent close.
  if (d.reason == 0x8E) return link_end::closed_by_broker;
  return d.reason == 0x81 || d.reason == 0x82 || d.reason == 0x93 || d.reason == 0x94 || d.reason == 0x95
             ? link_end::violation  // the broker says evpipe broke the protocol: back off, never at full speed
             : link_end::lost;
}

}  // namespace evpipe::io
