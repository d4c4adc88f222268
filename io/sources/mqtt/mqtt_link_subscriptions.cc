#include "io/sources/mqtt/mqtt_link.h"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include "io/sources/mqtt/mqtt_codec_v5.h"
#include "stages/topic_filter.h"

// The subscriptions of an mqtt_link: what it asks the broker for after
// CONNACK, and what it makes of the SUBACK. Split from mqtt_link.cc.

namespace evpipe::io {

void mqtt_link::subscribe() {
  mqtt::subscribe_packet sub;
  sub.packet_id = next_packet_id();
  for (const auto& f : sh_.cfg.topics) {
    sub.filters.emplace_back(wire_filter(f), static_cast<uint8_t>(sh_.cfg.qos));
  }
  // Last, so the SUBACK's first codes still line up with `topics`.
  if (!sh_.cfg.shared_group.empty()) sub.filters.emplace_back(wire_filter(probe_topic()), 1);
  subscribe_id_ = sub.packet_id;
  if (v5_) {
    mqtt::v5::encode_subscribe(pending_, sub, {});
  } else {
    mqtt::encode_subscribe(pending_, sub);
  }
  flush();
}

void mqtt_link::report_suback(const mqtt::suback_packet& s) {
  if (!subscribed_) {
    subscribed_ = true;  // shut() takes it back
    sh_.probe.sessions_subscribed.fetch_add(1);
  }
  int degraded = 0;
  for (size_t i = 0; i < s.return_codes.size() && i < sh_.cfg.topics.size(); ++i) {
    // 3.1.1 refuses with 0x80; MQTT 5 with a reason code from 0x80 up.
    if (s.return_codes[i] >= 0x80 || (s.return_codes[i] == 0 && sh_.cfg.qos > 0)) ++degraded;
    if (s.return_codes[i] >= 0x80) {
      spdlog::error("mqtt {} ({}): the broker refused the subscription to \"{}\"{}", sh_.cfg.url, client_id_,
                    sh_.cfg.topics[i],
                    v5_ ? std::string(": ") + mqtt::v5::reason_name(s.return_codes[i]) : std::string());
    } else if (s.return_codes[i] < sh_.cfg.qos) {
      spdlog::warn("mqtt {} ({}): the broker granted QoS {} for \"{}\" (asked {}): messages are not redelivered",
                   sh_.cfg.url, client_id_, s.return_codes[i], sh_.cfg.topics[i], sh_.cfg.qos);
    }
  }
  if (sh_.memory) {
    // Remembered only once granted: a refused filter is not in the session.
    std::vector<mqtt_subscription_memory::filter_row> granted;
    for (size_t i = 0; i < s.return_codes.size() && i < sh_.cfg.topics.size(); ++i) {
      if (s.return_codes[i] < 0x80) granted.push_back({wire_filter(sh_.cfg.topics[i]), s.return_codes[i]});
    }
    size_t probe = sh_.cfg.topics.size();
    if (!sh_.cfg.shared_group.empty() && probe < s.return_codes.size() && s.return_codes[probe] < 0x80) {
      granted.push_back({wire_filter(probe_topic()), s.return_codes[probe]});
    }
    if (!granted.empty()) sh_.memory->remember(client_id_, sh_.cfg.broker.str(), std::move(granted));
  }
  state_.suback_degraded = degraded;
  update_degraded();
  if (!sh_.cfg.shared_group.empty()) {
    size_t probe = sh_.cfg.topics.size();
    if (probe < s.return_codes.size() && s.return_codes[probe] < 0x80) {
      start_shared_probe();
    } else {
      spdlog::warn("mqtt {} ({}): the broker refused the subscription to \"{}\": whether it honours shared_group "
                   "\"{}\" cannot be checked", sh_.cfg.url, client_id_, wire_filter(probe_topic()),
                   sh_.cfg.shared_group);
    }
  }
}

void mqtt_link::update_degraded() {
  // The source's gauge sums its sessions' latest SUBACKs (a shared group
  // that delivers nothing has its own gauge, shared_unconfirmed).
  int degraded = state_.suback_degraded;
  sh_.probe.subscriptions_degraded.fetch_add(degraded - state_.degraded_filters, std::memory_order_relaxed);
  state_.degraded_filters = degraded;
}

std::string mqtt_link::probe_topic() const {
  // A topic level of the client id; '+' and '#' are not allowed in a topic.
  std::string t = "evpipe/probe/" + client_id_;
  for (size_t i = 13; i < t.size(); ++i) {
    if (t[i] == '+' || t[i] == '#') t[i] = '_';
  }
  return t;
}

void mqtt_link::start_shared_probe() {
  probe_waiting_ = true;
  shared_evidence_ = false;
  std::string topic = probe_topic();
  mqtt::publish_packet p;
  p.topic = topic;
  p.payload = "evpipe shared_group probe";
  p.qos = 1;  // the broker keeps it until we have it, even across a reconnect race
  p.packet_id = next_packet_id();
  if (v5_) {
    mqtt::v5::encode_publish(pending_, p, {});
  } else {
    mqtt::encode_publish(pending_, p);
  }
  flush();
  probe_timer_.expires_after(shared_probe_timeout);
  probe_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->shared_probe_expired();
  });
}

void mqtt_link::shared_probe_expired() {
  if (!probe_waiting_ || closed_ || stopping_) return;
  probe_waiting_ = false;
  if (shared_evidence_) {
    // Messages on the shared filters arrive: the group works; the probe is
    // only queued behind them.
    return;
  }
  if (!state_.shared_silent.exchange(true)) {
    spdlog::error("mqtt {} ({}): shared_group \"{}\" delivers nothing: a probe published to \"{}\" did not come back "
                  "through \"{}\" within {} s. The broker most likely does not support shared subscriptions and "
                  "bound the \"$share/...\" filters literally (aedes and RabbitMQ 3.10 do; Mosquitto from 1.6, "
                  "EMQX, HiveMQ and VerneMQ support them), or its ACL denies this client the probe topic. Remove "
                  "shared_group (and use connections = 1) or use a broker with shared subscriptions; "
                  "mqtt_shared_subscription_unconfirmed counts it and /health/ready lists it",
                  sh_.cfg.url, client_id_, sh_.cfg.shared_group, probe_topic(), wire_filter(probe_topic()),
                  shared_probe_timeout.count());
    sh_.probe.shared_unconfirmed.fetch_add(1, std::memory_order_relaxed);
  }
}

void mqtt_link::shared_probe_answered() {
  probe_waiting_ = false;
  probe_timer_.cancel();
  if (state_.shared_silent.exchange(false)) {
    spdlog::info("mqtt {} ({}): shared_group \"{}\" delivers again (the probe came back)", sh_.cfg.url, client_id_,
                 sh_.cfg.shared_group);
    sh_.probe.shared_unconfirmed.fetch_sub(1, std::memory_order_relaxed);
  }
}

std::string mqtt_link::wire_filter(const std::string& f) const {
  return sh_.cfg.shared_group.empty() ? f : "$share/" + sh_.cfg.shared_group + "/" + f;
}

bool mqtt_link::wanted_topic(std::string_view topic) const noexcept {
  for (const auto& f : sh_.cfg.topics) {
    if (stages::topic_matches(f, topic)) return true;
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
    current = current || (!sh_.cfg.shared_group.empty() && wire_filter(probe_topic()) == r.filter);
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
  if (v5_) {
    mqtt::v5::encode_unsubscribe(pending_, u, {});
  } else {
    mqtt::encode_unsubscribe(pending_, u);
  }
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
