#include "io/sources/mqtt/mqtt_link.h"

#include <spdlog/spdlog.h>

// The subscriptions of an mqtt_link: what it asks the broker for after
// CONNACK, and what it makes of the SUBACK. Split from mqtt_link.cc.

namespace evpipe::io {

void mqtt_link::subscribe() {
  mqtt::subscribe_packet sub;
  sub.packet_id = next_packet_id();
  for (const auto& f : sh_.cfg.topics) {
    std::string filter = sh_.cfg.shared_group.empty() ? f : "$share/" + sh_.cfg.shared_group + "/" + f;
    sub.filters.emplace_back(std::move(filter), static_cast<uint8_t>(sh_.cfg.qos));
  }
  subscribe_id_ = sub.packet_id;
  mqtt::encode_subscribe(pending_, sub);
  flush();
}

void mqtt_link::report_suback(const mqtt::suback_packet& s) {
  int degraded = 0;
  for (size_t i = 0; i < s.return_codes.size() && i < sh_.cfg.topics.size(); ++i) {
    if (s.return_codes[i] == 0x80 || (s.return_codes[i] == 0 && sh_.cfg.qos > 0)) ++degraded;
    if (s.return_codes[i] == 0x80) {
      spdlog::error("mqtt {} ({}): the broker refused the subscription to \"{}\"", sh_.cfg.url, client_id_,
                    sh_.cfg.topics[i]);
    } else if (s.return_codes[i] < sh_.cfg.qos) {
      spdlog::warn("mqtt {} ({}): the broker granted QoS {} for \"{}\" (asked {}): messages are not redelivered",
                   sh_.cfg.url, client_id_, s.return_codes[i], sh_.cfg.topics[i], sh_.cfg.qos);
    }
  }
  // The source's gauge sums its sessions' latest SUBACKs.
  sh_.probe.subscriptions_degraded.fetch_add(degraded - state_.degraded_filters, std::memory_order_relaxed);
  state_.degraded_filters = degraded;
}

}  // namespace evpipe::io
