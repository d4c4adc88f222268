#include "io/sources/mqtt/mqtt_link.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <cstring>

#include "io/sources/mqtt/mqtt_codec_v5.h"
#include "io/sources/mqtt/mqtt_dead_letter.h"

namespace evpipe::io {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

mqtt_link::mqtt_link(asio::strand<asio::io_context::executor_type> strand, const mqtt_shared& shared, std::string client_id,
                     mqtt_session_state& state, connected_fn on_connected)
    : on_connected_(std::move(on_connected)),
      strand_(strand),
      sh_(shared),
      client_id_(std::move(client_id)),
      state_(state),
      stream_(strand_, shared.tls),
      wake_(strand_),
      keepalive_timer_(strand_),
      probe_timer_(strand_),
      tracker_(uint64_t{shared.cfg.protocol == "5" ? 3u : 2u} * shared.cfg.max_inflight),  // read_limit() and margin
      intake_(shared.router.shard_count(), shared.limits),
      limits_(shared.limits),
      max_packet_(max_packet_for(shared.limits)),
      v5_(shared.cfg.protocol == "5"),
      keepalive_s_(shared.cfg.keepalive_s),
      buf_(std::min(max_packet_, size_t{256} << 10) + simdjson::SIMDJSON_PADDING) { intake_.set_tenancy(shared.tenancy); }

size_t mqtt_link::capacity() const noexcept { return buf_.size() - simdjson::SIMDJSON_PADDING; }

asio::awaitable<link_end> mqtt_link::run(std::string& why) {
  auto self = shared_from_this();
  if (!co_await connect(why)) {
    co_return connack_refused_ ? link_end::refused : bad_connack_ ? link_end::violation : link_end::unreachable;
  }
  connected_ = true;
  connected_at_ = clock_type::now();
  sh_.probe.connections_active.fetch_add(1);
  pipeline::bump(sh_.probe.connections_total);
  on_connected_(session_present_);
  subscribe();
  recall_removed_filters();
  asio::co_spawn(strand_, keepalive_loop(self), asio::detached);
  reading_ = true;
  sh_.reading.fetch_add(1);
  link_end end = co_await read_loop(why);
  reading_ = false;
  sh_.reading.fetch_sub(1);
  if (end == link_end::stopped) {
    finish_if_done();  // closes once every message read is acknowledged
  } else {
    shut();
  }
  co_return end;
}

void mqtt_link::stop_reading() {
  stopping_ = true;
  wake_.cancel();
  boost::system::error_code ec;
  // Wakes a pending read (it completes with end of stream); writes go on.
  stream_.socket().shutdown(tcp::socket::shutdown_receive, ec);
}

asio::awaitable<bool> mqtt_link::connect(std::string& why) {
  const auto& cfg = sh_.cfg;
  // One deadline for resolving, connecting, the TLS handshake and CONNACK.
  asio::steady_timer deadline(strand_);
  deadline.expires_after(std::chrono::seconds(std::max<uint32_t>(10, cfg.keepalive_s)));
  deadline.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->connect_done_) return;
    self->connect_timed_out_ = true;
    boost::system::error_code ignore;
    self->stream_.socket().close(ignore);
  });
  auto fail = [&](const std::string& what, const boost::system::error_code& ec) {
    connect_done_ = true;
    why = what + ": " + (connect_timed_out_ ? std::string("timed out") : ec.message());
    deadline.cancel();
    return false;
  };
  tcp::resolver resolver(strand_);
  auto [rec, endpoints] = co_await resolver.async_resolve(cfg.broker.host, std::to_string(cfg.broker.port),
                                                          asio::as_tuple(asio::use_awaitable));
  if (rec) co_return fail("cannot resolve " + cfg.broker.host, rec);
  auto [cec, ep] = co_await asio::async_connect(stream_.socket(), endpoints, asio::as_tuple(asio::use_awaitable));
  if (cec || stopping_) co_return fail("cannot connect to " + cfg.broker.str(), cec);
  boost::system::error_code ignore;
  stream_.socket().set_option(tcp::no_delay(true), ignore);
  stream_.socket().set_option(asio::socket_base::keep_alive(true), ignore);
  if (stream_.is_tls()) {
    SSL_set_tlsext_host_name(stream_.tls().native_handle(), cfg.broker.host.c_str());
    stream_.tls().set_verify_callback(ssl::host_name_verification(cfg.broker.host));
    auto [hec] = co_await stream_.tls().async_handshake(ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    if (hec) co_return fail("TLS handshake with " + cfg.broker.str() + " failed", hec);
  }
  if (v5_) {
    encode_connect_v5();
  } else {
    mqtt::connect_packet c;
    c.client_id = client_id_;
    c.clean_session = false;  // the broker keeps our subscriptions and queued messages
    c.keepalive_s = static_cast<uint16_t>(cfg.keepalive_s);
    if (!cfg.username.empty()) c.username = cfg.username;
    if (!cfg.password.empty()) c.password = cfg.password;
    mqtt::encode_connect(pending_, c);
  }
  flush();
  // The first packet must be CONNACK (MQTT-3.2.0-1).
  for (;;) {
    mqtt::frame f;
    auto st = mqtt::read_frame(std::string_view(buf_.data() + begin_, end_ - begin_), max_packet_, f);
    if (st == mqtt::decode_status::ok && v5_) {
      begin_ += f.size;
      connect_done_ = true;
      deadline.cancel();
      co_return accept_connack_v5(f, why);
    }
    if (v5_ && begin_ < end_ && (static_cast<uint8_t>(buf_[begin_]) >> 4) == 15) {
      why = "the broker asked for enhanced authentication (AUTH), which evpipe does not support: use user name and "
            "password (username, password_file) or TLS client certificates";
      bad_connack_ = true;
      connect_done_ = true;
      deadline.cancel();
      co_return false;
    }
    if (st == mqtt::decode_status::ok) {
      mqtt::connack_packet ack;
      if (f.type != mqtt::packet_type::connack || mqtt::parse_connack(f, ack) != mqtt::decode_status::ok) {
        why = "the broker's first packet was not a valid CONNACK";
        bad_connack_ = true;
        connect_done_ = true;
        deadline.cancel();
        co_return false;
      }
      begin_ += f.size;
      connect_done_ = true;
      deadline.cancel();
      if (ack.return_code != 0) {
        static constexpr const char* codes[] = {"", "unacceptable protocol version", "client identifier rejected",
                                                "server unavailable", "bad user name or password",
                                                "not authorized"};
        why = std::string("the broker refused the connection: ") + codes[ack.return_code];
        connack_refused_ = true;
        co_return false;
      }
      session_present_ = ack.session_present;
      co_return true;
    }
    if (st != mqtt::decode_status::need_more) {
      why = "malformed CONNACK";
      bad_connack_ = true;
      connect_done_ = true;
      deadline.cancel();
      co_return false;
    }
    auto [ec, n] = co_await stream_.read_some(asio::buffer(buf_.data() + end_, capacity() - end_));
    if (ec) co_return fail("no CONNACK from " + cfg.broker.str(), ec);
    end_ += n;
  }
}

pipeline::room_bell::waiter mqtt_link::room_waiter() {
  std::weak_ptr<mqtt_link> w = weak_from_this();
  return {w, [w, strand = strand_] {
            asio::post(strand, [w] {
              if (auto self = w.lock()) {
                self->waiting_for_room_ = false;
                self->wake_.cancel();
              }
            });
          }};
}

asio::awaitable<link_end> mqtt_link::read_loop(std::string& why) {
  for (;;) {
    if (auto end = process_buffer(why)) co_return *end;
    submit();
    // Whether what was just taken took the tenant over its quota: then the
    // next cycles take few messages each (process_buffer), and go on doing
    // so while they leave messages buffered, even through a cycle that a
    // late wake let stay within the quota.
    throttled_ = over_quota() || (throttled_ && held_);
    // Backpressure: wait while a shard queue is full, too much is
    // unacknowledged or the tenant is over its quota. Nothing polls: acks
    // end the wait (acknowledge), and so does a shard once its queue has
    // room (router::wait_for_room), or a stop; the quota's wait runs to the
    // quota's time, and the other timeout only backs these up.
    while (!stopping_ && !closed_) {
      const bool room = sh_.router.has_room();
      const bool within = room && tracker_.in_flight() < read_limit();
      const bool quota = within && over_quota();
      if (within && !quota) break;
      pause_.begin(sh_.probe);
      if (!room && !waiting_for_room_) {
        if (!sh_.router.wait_for_room(pipeline::intake::unpinned, room_waiter())) continue;  // room came meanwhile
        waiting_for_room_ = true;
      }
      if (quota) {
        wake_.expires_after(std::chrono::nanoseconds(std::max<int64_t>(0, quota_until_ns_ - pipeline::steady_now_ns())));
      } else {
        wake_.expires_after(1s);
      }
      co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (pause_.paused()) {
      pause_.end(sh_.probe);
      if (ping_outstanding_) ping_sent_ = clock_type::now();  // we were not reading: no verdict yet
    }
    if (stopping_) co_return link_end::stopped;
    if (closed_) {
      why = dead_reason_.empty() ? "connection closed" : dead_reason_;
      co_return link_end::lost;
    }
    if (held_) continue;  // packets already buffered come first
    make_room();
    auto [ec, n] = co_await stream_.read_some(asio::buffer(buf_.data() + end_, capacity() - end_));
    if (stopping_) co_return link_end::stopped;  // what raced the stop stays unacknowledged: redelivered
    if (ec) {
      bool by_broker = dead_reason_.empty() && (ec == asio::error::eof || ec == asio::error::connection_reset);
      why = !dead_reason_.empty() ? dead_reason_
            : ec == asio::error::eof ? "the broker closed the connection"
                                     : ec.message();
      co_return by_broker ? link_end::closed_by_broker : link_end::lost;
    }
    end_ += n;
  }
}

std::optional<link_end> mqtt_link::process_buffer(std::string& why) {
  int64_t received = pipeline::steady_now_ns();
  if (limits_follower_.changed(limits_)) {  // a reload changed [events]: from the next packet on
    max_packet_ = max_packet_for(limits_);
    intake_.set_limits(limits_);
  }
  auto& validator = pipeline::thread_validator(limits_);
  held_ = false;
  size_t taken = 0;
  for (;;) {
    if (skip_) {
      if (!skip_some()) return std::nullopt;
      continue;
    }
    // Our bound, and while the tenant is over its quota a few messages a
    // cycle, so that what it gets in trickles in at the quota's pace rather
    // than a buffer's worth at once after each pause (docs/tenants.md): the
    // rest waits in the buffer.
    if (tracker_.in_flight() >= read_limit() || (throttled_ && taken >= throttled_publishes)) {
      held_ = begin_ < end_;
      return std::nullopt;
    }
    mqtt::frame f;
    std::string_view avail(buf_.data() + begin_, end_ - begin_);
    if (v5_ && !avail.empty() && (static_cast<uint8_t>(avail[0]) >> 4) == 15) {
      why = "the broker sent AUTH: enhanced authentication is not supported by evpipe";
      return link_end::violation;
    }
    auto st = mqtt::read_frame(avail, max_packet_, f);
    if (st == mqtt::decode_status::need_more) return std::nullopt;
    if (st == mqtt::decode_status::too_large) {
      if (f.type != mqtt::packet_type::publish) {
        why = "the broker sent an oversized non-PUBLISH packet";
        return link_end::violation;
      }
      if (!start_skip(f, avail, why)) return why.empty() ? std::nullopt : std::optional(link_end::violation);
      continue;
    }
    if (st != mqtt::decode_status::ok) {
      why = "malformed packet from the broker";
      return link_end::violation;
    }
    switch (f.type) {
      case mqtt::packet_type::publish: {
        mqtt::publish_packet p;
        auto ps = v5_ ? mqtt::v5::parse_publish(f, p, props_) : mqtt::parse_publish(f, p);
        if (ps != mqtt::decode_status::ok) {
          why = "malformed PUBLISH from the broker";
          return link_end::violation;
        }
        if (v5_ && !check_publish_v5(p, why)) return link_end::violation;
        if (p.qos == 2 && state_.awaiting_pubrel.contains(p.packet_id)) {
          // Its outcome is committed and PUBREC sent; the broker did not see
          // that PUBREC. Answer again, store nothing twice.
          pass_through(p.packet_id, p.qos);
          break;
        }
        if (!sh_.cfg.shared_group.empty() && p.topic == probe_topic()) {
          // Our shared_group probe came back: the broker honours $share.
          shared_probe_answered();
          pass_through(p.packet_id, p.qos);
          break;
        }
        if (sh_.cfg.dlq_publish && !sh_.cfg.dlq_prefix.empty() && p.topic.starts_with(sh_.cfg.dlq_prefix)) {
          // Our own dead-letter republish (a filter such as "tracker/#" also
          // matches the DLQ prefix, and MQTT 3.1.1 cannot exclude a branch):
          // consuming it would dead-letter and republish it again, forever.
          pipeline::bump(sh_.probe.dlq_echoes_ignored);
          pass_through(p.packet_id, p.qos);
          break;
        }
        if (!wanted_topic(p.topic)) {
          // From a subscription the persistent session kept from an older
          // config (its UNSUBSCRIBE is on the way, or the broker queued this
          // before it): the config no longer wants it, so it is acknowledged
          // and not stored.
          if (!state_.told_unwanted) {
            state_.told_unwanted = true;
            spdlog::info("mqtt {} ({}): a message on \"{}\" matches no configured topic filter (a subscription kept "
                         "from an older configuration): acknowledged and not stored; further ones are not logged",
                         sh_.cfg.url, client_id_, p.topic);
          }
          pass_through(p.packet_id, p.qos);
          break;
        }
        if (probe_waiting_) shared_evidence_ = true;
        // RFC 8259 section 8.1 lets a parser ignore a leading byte order mark;
        // some device SDKs send one, and it must not dead-letter the event.
        if (p.payload.starts_with("\xEF\xBB\xBF")) p.payload.remove_prefix(3);
        uint64_t seq = take_seq(p.packet_id, p.qos, p.topic, p.payload);
        size_t readable = static_cast<size_t>(buf_.data() + buf_.size() - p.payload.data());
        intake_.add(p.payload, readable, seq, received, p.topic, validator, pipeline::topic_rule::source_only,
                    properties_json_);
        ++taken;
        break;
      }
      case mqtt::packet_type::suback: {
        mqtt::suback_packet s;
        auto ss = v5_ ? mqtt::v5::parse_suback(f, s, props_) : mqtt::parse_suback(f, s);
        if (ss != mqtt::decode_status::ok) {
          why = "malformed SUBACK";
          return link_end::violation;
        }
        if (s.packet_id == subscribe_id_) report_suback(s);
        break;
      }
      case mqtt::packet_type::unsuback: {
        uint16_t id = 0;
        mqtt::suback_packet u;
        auto us = v5_ ? mqtt::v5::parse_unsuback(f, u, props_) : mqtt::parse_packet_id(f, id);
        if (us != mqtt::decode_status::ok) {
          why = "malformed UNSUBACK";
          return link_end::violation;
        }
        if (v5_) id = u.packet_id;
        report_unsuback(id);
        break;
      }
      case mqtt::packet_type::pingresp:
        ping_outstanding_ = false;
        break;
      case mqtt::packet_type::puback:
        break;  // of a dead letter we republished: nothing more to do
      case mqtt::packet_type::pubrel: {
        uint16_t id = 0;
        mqtt::v5::ack_packet rel;
        auto rs = v5_ ? mqtt::v5::parse_ack(f, rel) : mqtt::parse_packet_id(f, id);
        if (rs != mqtt::decode_status::ok) {
          why = "malformed PUBREL from the broker";
          return link_end::violation;
        }
        if (v5_) id = rel.packet_id;
        // The broker has our PUBREC: the exchange ends here. PUBCOMP is owed
        // even for an id we do not know (a PUBREL resent after a reconnect
        // whose PUBCOMP was lost, MQTT-4.3.3).
        bool known = state_.awaiting_pubrel.erase(id) > 0;
        if (v5_) {
          // MQTT 5 says which: 0x92 when the id is not ours any more.
          mqtt::v5::encode_ack(pending_, mqtt::packet_type::pubcomp, {id, uint8_t(known ? 0x00 : 0x92), {}});
        } else {
          mqtt::encode_pubcomp(pending_, id);
        }
        flush();
        break;
      }
      case mqtt::packet_type::disconnect:
        if (v5_) return broker_disconnect_v5(f, why);
        [[fallthrough]];
      default:
        why = "unexpected packet type " + std::to_string(static_cast<int>(f.type)) + " from the broker";
        return link_end::violation;
    }
    begin_ += f.size;
  }
}

uint64_t mqtt_link::take_seq(uint16_t packet_id, uint8_t qos, std::string_view topic, std::string_view payload) {
  uint64_t seq = tracker_.next();
  sh_.probe.unacked.fetch_add(1, std::memory_order_relaxed);
  auto& m = inflight_.emplace_back();
  m.packet_id = packet_id;
  m.qos = qos;
  if (qos > 0) ++qos_unacked_;
  if (sh_.cfg.dlq_publish) {
    m.topic.assign(topic);
    // What dlq_events.raw keeps of it: all, or the prefix of a too_large one.
    m.payload.assign(payload.size() > limits_.max_event_bytes ? payload.substr(0, too_large_prefix) : payload);
    m.properties_json = properties_json_;
  }
  return seq;
}

void mqtt_link::pass_through(uint16_t packet_id, uint8_t qos) {
  uint64_t seq = take_seq(packet_id, qos, {}, {});
  tracker_.complete(seq);
  release();
}

void mqtt_link::submit() {
  const size_t taken = intake_.hand_over(shared_from_this());
  if (taken == 0) return;
  sh_.probe.note_received(taken);
  sh_.router.submit(intake_.batches());
}

void mqtt_link::make_room() {
  if (begin_ > 0) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ == capacity() && capacity() < max_packet_) {
    buf_.resize(std::min(max_packet_, capacity() * 2) + simdjson::SIMDJSON_PADDING);
  }
}

void mqtt_link::acknowledge(const std::vector<stages::outcome>& outcomes) {
  if (closed_) return;  // a lost connection: the broker redelivers these to the next one
  uint64_t first = tracker_.acked() + 1;
  for (const auto& o : outcomes) {
    tracker_.complete(o.seq);
    if (sh_.cfg.dlq_publish && o.kind == stages::outcome_kind::dead_lettered) {
      auto& m = inflight_[o.seq - first];
      m.dead_lettered = true;
      m.why = o.why;
    }
  }
  release();
}

void mqtt_link::release() {
  uint64_t before = tracker_.acked();
  uint64_t after = tracker_.advance();
  sh_.probe.unacked.fetch_sub(static_cast<int64_t>(after - before), std::memory_order_relaxed);
  for (uint64_t i = before; i < after; ++i) {
    auto& m = inflight_.front();
    if (m.dead_lettered) publish_dead_letter(m);
    if (m.qos > 0) --qos_unacked_;
    if (m.qos == 2) {
      // Step one of QoS 2: the message is ours now; PUBREL/PUBCOMP follow.
      mqtt::encode_pubrec(pending_, m.packet_id);
      state_.awaiting_pubrel.insert(m.packet_id);
      ++pending_pubacks_;
    } else if (m.packet_id != 0) {
      mqtt::encode_puback(pending_, m.packet_id);
      ++pending_pubacks_;
    }
    inflight_.pop_front();
  }
  if (pause_.paused() && after != before) wake_.cancel();  // room again: read now
  flush();
}

void mqtt_link::publish_dead_letter(const inflight& m) {
  std::string topic = dead_letter_topic(sh_.cfg.dlq_prefix, m.topic);
  std::string body = dead_letter_body(m.topic, m.why, m.payload, m.properties_json);
  mqtt::publish_packet p;
  p.topic = topic;
  p.payload = body;
  p.qos = 1;
  p.packet_id = next_packet_id();
  if (v5_) {
    mqtt::v5::encode_publish(pending_, p, {});
  } else {
    mqtt::encode_publish(pending_, p);
  }
  pipeline::bump(sh_.probe.dlq_published);
}

void mqtt_link::flush() {
  if (writing_ || closed_ || pending_.empty()) return;
  writing_ = true;
  std::swap(writing_buf_, pending_);
  pending_.clear();
  size_t pubacks = pending_pubacks_;
  pending_pubacks_ = 0;
  last_write_ = clock_type::now();
  stream_.write(asio::buffer(writing_buf_), [self = shared_from_this(), pubacks](boost::system::error_code ec, size_t) {
    if (!self->writing_) return;  // closed meanwhile
    self->writing_ = false;
    if (ec) {
      self->dead_reason_ = "write failed: " + ec.message();
      self->shut();
      return;
    }
    pipeline::bump(self->sh_.probe.pubacks, pubacks);
    self->flush();
    self->finish_if_done();
  });
}

asio::awaitable<void> mqtt_link::keepalive_loop(std::shared_ptr<mqtt_link> self) {
  // In milliseconds: half of a keep alive of 1 s is not 0 s.
  const auto keepalive = std::chrono::milliseconds(1000 * int64_t(keepalive_s_));
  const auto tick = std::max<clock_type::duration>(keepalive / 4, 250ms);
  while (!closed_) {
    keepalive_timer_.expires_after(tick);
    co_await keepalive_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    if (closed_) break;
    auto now = clock_type::now();
    if (ping_outstanding_ && !pause_.paused() && now - ping_sent_ > keepalive) {
      dead_reason_ = "no PINGRESP within the keep alive of " + std::to_string(keepalive_s_) + " s";
      shut();
      break;
    }
    // Quiet for half a keep alive: a PINGREQ, even with one unanswered. A
    // broker drops a client it has heard nothing from for 1.5 keep alives,
    // and a link that is not reading (paused, messages held) cannot read
    // the PINGRESP, which waits behind what it holds; with QoS 0, or no
    // commit to acknowledge, it would write nothing else (docs/mqtt.md).
    // Behind a write that does not complete (a broker that stopped reading)
    // one PINGREQ waits, and starts the verdict's clock.
    if (now - last_write_ >= keepalive / 2 && !(writing_ && ping_outstanding_)) {
      mqtt::encode_pingreq(pending_);
      if (!ping_outstanding_) ping_sent_ = now;  // the verdict counts from the first unanswered one
      ping_outstanding_ = true;
      flush();
    }
  }
}

void mqtt_link::finish_if_done() {
  if (reading_ || closed_ || writing_ || !stopping_ || tracker_.in_flight() != 0 || !pending_.empty()) return;
  if (!sent_disconnect_) {
    sent_disconnect_ = true;
    mqtt::encode_disconnect(pending_);
    flush();
    return;
  }
  shut();
}

void mqtt_link::shut() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.socket().close(ec);
  wake_.cancel();
  keepalive_timer_.cancel();
  probe_timer_.cancel();
  if (connected_) sh_.probe.connections_active.fetch_sub(1);
  if (subscribed_) sh_.probe.sessions_subscribed.fetch_sub(1);
  // Whatever is unacknowledged is now the broker's to redeliver.
  sh_.probe.unacked.fetch_sub(static_cast<int64_t>(tracker_.in_flight()), std::memory_order_relaxed);
}

}  // namespace evpipe::io
