#include "io/sources/mqtt/mqtt_link.h"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

// The subscriptions of an mqtt_link: what it asks the broker for after
// CONNACK, and what it makes of the SUBACK. Split from mqtt_link.cc.

namespace evpipe::io {

void mqtt_link::subscribe() {
  mqtt::subscribe_packet sub;
  sub.packet_id = next_packet_id();
  for (const auto& f : sh_.cfg.topics) {
    sub.filters.emplace_back(wire_filter(f), static_cast<uint8_t>(sh_.cfg.qos));
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
  if (sh_.memory) {
    // Remembered only once granted: a refused filter is not in the session.
    std::vector<mqtt_subscription_memory::filter_row> granted;
    for (size_t i = 0; i < s.return_codes.size() && i < sh_.cfg.topics.size(); ++i) {
      if (s.return_codes[i] != 0x80) granted.push_back({wire_filter(sh_.cfg.topics[i]), s.return_codes[i]});
    }
    if (!granted.empty()) sh_.memory->remember(client_id_, sh_.cfg.broker.str(), std::move(granted));
  }
  // The source's gauge sums its sessions' latest SUBACKs.
  sh_.probe.subscriptions_degraded.fetch_add(degraded - state_.degraded_filters, std::memory_order_relaxed);
  state_.degraded_filters = degraded;
}

std::string mqtt_link::wire_filter(const std::string& f) const {
  return sh_.cfg.shared_group.empty() ? f : "$share/" + sh_.cfg.shared_group + "/" + f;
}

bool mqtt_link::wanted_topic(std::string_view topic) const noexcept {
  for (const auto& f : sh_.cfg.topics) {
    if (mqtt::topic_matches_filter(f, topic)) return true;
  }
  return false;
}

void mqtt_link::recall_removed_filters() {
  if (!sh_.memory) return;
  sh_.memory->recall(client_id_, sh_.cfg.broker.str(),
                     [self = shared_from_this()](std::optional<std::vector<mqtt_subscription_memory::filter_row>> rows) {
                       if (!rows) return;  // the memory logged why
                       boost::asio::post(self->strand_, [self, rows = std::move(*rows)] { self->unsubscribe_removed(rows); });
                     });
}

void mqtt_link::unsubscribe_removed(const std::vector<mqtt_subscription_memory::filter_row>& remembered) {
  if (closed_ || stopping_) return;  // the next connection asks again
  std::vector<std::string> gone;
  for (const auto& r : remembered) {
    bool current = false;
    for (const auto& f : sh_.cfg.topics) current = current || wire_filter(f) == r.filter;
    if (!current) gone.push_back(r.filter);
  }
  if (gone.empty()) return;
  std::string list;
  for (const auto& g : gone) list += (list.empty() ? "\"" : ", \"") + g + "\"";
  if (!session_present_) {
    // A new session holds only what we just subscribed: nothing to undo.
    spdlog::info("mqtt {} ({}): forgetting filters no longer configured ({}): the broker had no session to remove "
                 "them from", sh_.cfg.url, client_id_, list);
    sh_.memory->forget(client_id_, sh_.cfg.broker.str(), std::move(gone));
    return;
  }
  // MQTT 3.1.1 keeps a session's subscriptions until they are unsubscribed:
  // without this, a filter removed from `topics` keeps delivering forever.
  spdlog::info("mqtt {} ({}): unsubscribing from filters no longer configured: {}", sh_.cfg.url, client_id_, list);
  mqtt::unsubscribe_packet u;
  u.packet_id = next_packet_id();
  u.filters = gone;
  unsubscribe_id_ = u.packet_id;
  unsubscribing_ = std::move(gone);
  mqtt::encode_unsubscribe(pending_, u);
  flush();
}

void mqtt_link::report_unsuback(uint16_t id) {
  if (id != unsubscribe_id_ || unsubscribing_.empty()) return;
  spdlog::info("mqtt {} ({}): the broker confirmed the UNSUBSCRIBE of {} filters", sh_.cfg.url, client_id_,
               unsubscribing_.size());
  if (sh_.memory) sh_.memory->forget(client_id_, sh_.cfg.broker.str(), std::move(unsubscribing_));
  unsubscribing_.clear();
}

}  // namespace evpipe::io
