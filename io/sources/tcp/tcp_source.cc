#include "io/sources/tcp/tcp_source.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "io/sources/tcp/line_framer.h"
#include "pipeline/ack_tracker.h"
#include "pipeline/batch_trace.h"
#include "pipeline/intake.h"
#include "stages/tenant/binding.h"

#include "io/listener.h"

namespace evpipe::io {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

}  // namespace

class tcp_connection final : public stages::event_origin,
                             public std::enable_shared_from_this<tcp_connection> {
 public:
  tcp_connection(tcp::socket socket, config::tcp_source cfg, pipeline::router& router,
                 pipeline::source_probe& probe, stages::envelope_limits limits, std::atomic<int>& reading)
      : reading_(reading),
        socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        idle_timer_(socket_.get_executor()),
        cfg_(std::move(cfg)),
        router_(router),
        probe_(probe),
        limits_(limits),
        framer_(limits.max_event_bytes, simdjson::SIMDJSON_PADDING),
        tracker_(uint64_t{2} * cfg_.max_unacked),
        intake_(router.shard_count(), limits) {
    if (cfg_.route_by == "connection") intake_.pin(router.lease_shard());
  }

  ~tcp_connection() override {
    probe_.unacked.fetch_sub(static_cast<int64_t>(tracker_.issued() - tracker_.acked()));
  }

  // Tenancy (docs/tenants.md): the listener's binding; before start().
  void set_tenancy(std::shared_ptr<const stages::tenant::binding> b) { intake_.set_tenancy(std::move(b)); }

  void start() {
    reading_.fetch_add(1);
    probe_.connections_active.fetch_add(1);
    pipeline::bump(probe_.connections_total);
    last_line_ = std::chrono::steady_clock::now();
    opened_ns_ = stages::steady_ns();
    asio::co_spawn(socket_.get_executor(), read_loop(shared_from_this()), asio::detached);
    if (cfg_.idle_timeout_s > 0) asio::co_spawn(socket_.get_executor(), idle_watch(shared_from_this()), asio::detached);
  }

  // From shard threads: hand the outcomes to this connection's strand.
  void on_outcomes(std::span<const stages::outcome> outcomes) override { post_outcomes(outcomes, nullptr); }
  // The same with the batch's timeline: this connection stamps when it takes
  // the outcomes and when the ack covering them is written, then has it
  // judged (pipeline/batch_trace.h).
  bool on_outcomes_timed(std::span<const stages::outcome> outcomes, const stages::batch_timeline& tl) override {
    post_outcomes(outcomes, &tl);
    return true;
  }

 private:
  // A batch's timeline waiting for the ack that covers its lines.
  struct due_ack {
    uint64_t last_seq = 0;
    uint64_t writes_before = 0;  // acks begun before its outcomes were marked
    stages::batch_timeline timeline;
  };

  void post_outcomes(std::span<const stages::outcome> outcomes, const stages::batch_timeline* tl) {
    std::vector<uint64_t> seqs;
    seqs.reserve(outcomes.size());
    due_ack due;
    for (const auto& o : outcomes) {
      seqs.push_back(o.seq);
      due.last_seq = std::max(due.last_seq, o.seq);
    }
    if (tl != nullptr) due.timeline = *tl;
    asio::post(socket_.get_executor(), [self = shared_from_this(), seqs = std::move(seqs), due]() mutable {
      if (due.timeline.of(stages::step::ack_posted) != 0) {
        due.timeline.stamp(stages::step::ack_run);
        due.writes_before = self->writes_begun_;
        self->due_.push_back(due);
      }
      for (uint64_t s : seqs) self->tracker_.complete(s);
      uint64_t before = self->tracker_.acked();
      uint64_t after = self->tracker_.advance();
      self->probe_.unacked.fetch_sub(static_cast<int64_t>(after - before), std::memory_order_relaxed);
      if (self->pause_.paused() && after != before) self->timer_.cancel();  // room again: read now
      self->send_ack();
    });
  }

  // Ack number `write` was written, covering the first `n` lines and, when
  // `all_ranges`, every line done when it began: the timelines it covers are
  // finished.
  void acks_written(uint64_t n, uint64_t write, bool all_ranges) {
    if (due_.empty()) return;
    const int64_t now = stages::steady_ns();
    size_t kept = 0;
    for (size_t i = 0; i < due_.size(); ++i) {
      auto& d = due_[i];
      const bool covered = d.last_seq <= n || (all_ranges && d.writes_before < write);
      if (!covered) {  // waits for a later ack (an earlier line of another shard, or the next write)
        if (kept != i) due_[kept] = d;
        ++kept;
        continue;
      }
      d.timeline.stamp(stages::step::ack_written, now);
      d.timeline.connection_age_ns = now - opened_ns_;
      probe_.ack_write_latency.observe_ns(now - d.timeline.of(stages::step::ack_posted));
      (void)pipeline::finish_timeline(d.timeline, stages::step::ack_written, /*on_io_thread=*/true);
    }
    due_.resize(kept);
  }

 public:
  void stop_reading() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      self->stopping_ = true;
      boost::system::error_code ec;
      // Wakes a pending read (it completes with end of stream).
      self->socket_.shutdown(tcp::socket::shutdown_receive, ec);
      self->timer_.cancel();
    });
  }

  void close() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      self->stopping_ = true;
      self->shut();
    });
  }

 private:
  asio::awaitable<void> read_loop(std::shared_ptr<tcp_connection> self) {
    for (;;) {
      // Backpressure: wait while a shard queue is full or too much is
      // unacked. Nothing polls: acks end the wait (post_outcomes), and so
      // does the shard once its queue has room (router::wait_for_room), or
      // a stop; the timeout only backs them up.
      while (!stopping_ && !closed_) {
        const bool room = router_.has_room(intake_.pinned_shard());
        if (room && tracker_.in_flight() < cfg_.max_unacked) break;
        pause_.begin(probe_);
        if (!room && !waiting_for_room_) {
          if (!router_.wait_for_room(intake_.pinned_shard(), room_waiter())) continue;  // room came meanwhile
          waiting_for_room_ = true;
        }
        timer_.expires_after(std::chrono::seconds(1));
        co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      if (pause_.paused()) last_line_ = std::chrono::steady_clock::now();  // idle counts while it reads (idle_watch)
      pause_.end(probe_);
      if (stopping_ || closed_) break;
      auto space = framer_.writable();
      // Every line takes at least one byte: reading no more bytes than the
      // tracker has free slots keeps the lines in flight within its window.
      size_t room = tracker_.window() - tracker_.in_flight() - 1;
      // A connection whose tenant was over its quota at the last read reads
      // a little at a time: what it takes then trickles in at the quota's
      // pace instead of a buffer's worth at once every so often, whose one
      // large batch would hold up other tenants' events in the same shard.
      if (throttled_) room = std::min(room, throttled_read_bytes);
      const size_t asked = std::min(space.size, room);
      auto [ec, n] = co_await socket_.async_read_some(asio::buffer(space.data, asked),
                                                      asio::as_tuple(asio::use_awaitable));
      if (ec) {
        // At end of stream the unterminated last line is an event too; when
        // we are stopping, it is dropped unacked (the client resends it).
        if (ec == asio::error::eof && !stopping_) {
          int64_t t = pipeline::steady_now_ns();
          auto it = framer_.finish();
          if (it.what != line_framer::kind::none) {
            last_line_ = std::chrono::steady_clock::now();
            take(it, t, pipeline::thread_validator(limits_));
            submit(t);
          }
        } else if (ec != asio::error::eof && ec != asio::error::operation_aborted) {
          spdlog::debug("tcp {}: read: {}", cfg_.listen.str(), ec.message());
        }
        break;
      }
      if (stopping_) break;  // data that raced the stop stays unacked: the client resends it
      framer_.commit(n);
      router_.take_spares(intake_.batches(), intake_.pinned_shard());  // memory of batches the shards are done with
      intake_.reserve(n);  // at most one allocation per shard batch and read
      int64_t t = pipeline::steady_now_ns();
      if (limits_follower_.changed(limits_)) {  // a reload changed [events]: from this read on
        framer_.set_max_line(limits_.max_event_bytes);
        intake_.set_limits(limits_);
      }
      auto& validator = pipeline::thread_validator(limits_);  // this thread's parser, once per read
      bool any = false;
      for (auto it = framer_.next(); it.what != line_framer::kind::none; it = framer_.next()) {
        take(it, t, validator);
        any = true;
      }
      if (any) last_line_ = std::chrono::steady_clock::now();  // once a read, not once a line
      submit(t);
      const int64_t over = intake_.take_throttle_ns();
      // Small reads go on while they come back full (more is waiting), even
      // through one that a late wake let stay within the quota.
      throttled_ = over > 0 || (throttled_ && n == asked);
      if (over > 0) {
        // Its tenant is over its quota (docs/tenants.md): this connection
        // waits until the tenant is back within it; others read on. Not
        // paused (pause_): acks must not end this wait (they cancel the timer to
        // end a backpressure wait), so it runs to its deadline.
        probe_.note_tenant_throttled(intake_.throttled_tenant());
        const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(over);
        quota_wait_ = true;
        while (!stopping_ && std::chrono::steady_clock::now() < until) {
          timer_.expires_at(until);
          co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        quota_wait_ = false;
        last_line_ = std::chrono::steady_clock::now();  // idle counts while it reads (idle_watch)
      }
    }
    reading_done_ = true;
    reading_.fetch_sub(1);
    finish_if_done();
  }

  // What router::wait_for_room runs, on a shard thread, once there is room:
  // ends this connection's wait on its strand.
  pipeline::room_bell::waiter room_waiter() {
    std::weak_ptr<tcp_connection> w = weak_from_this();
    return {w, [w, strand = socket_.get_executor()] {
              asio::post(strand, [w] {
                if (auto self = w.lock()) {
                  self->waiting_for_room_ = false;
                  self->timer_.cancel();
                }
              });
            }};
  }

  // Closes the connection once no complete line has arrived for the idle
  // timeout and nothing is unacked: an idle client, a vanished one (with TCP
  // keepalive), or one trickling bytes that never make a line. Only time in
  // which the connection reads counts: while it waits for room or for its
  // tenant's quota, lines may wait unread in its socket.
  asio::awaitable<void> idle_watch(std::shared_ptr<tcp_connection> self) {
    const auto timeout = std::chrono::seconds(cfg_.idle_timeout_s);
    while (!closed_) {
      idle_timer_.expires_at(last_line_ + timeout);
      co_await idle_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      if (closed_) break;
      if (std::chrono::steady_clock::now() - last_line_ >= timeout && tracker_.in_flight() == 0 && !writing_ &&
          !pause_.paused() && !quota_wait_) {
        spdlog::debug("tcp {}: closing a connection idle for {} s", cfg_.listen.str(), cfg_.idle_timeout_s);
        pipeline::bump(probe_.connections_timed_out);
        stopping_ = true;  // a partial line is dropped unacked: the client resends it
        shut();
        break;
      }
      if (std::chrono::steady_clock::now() - last_line_ >= timeout) last_line_ = std::chrono::steady_clock::now();
    }
  }

  // Hands one framed line to the intake (validate, route, copy once).
  void take(const line_framer::item& it, int64_t received, stages::envelope_validator& validator) {
    uint64_t seq = tracker_.next();
    probe_.unacked.fetch_add(1, std::memory_order_relaxed);
    if (it.what == line_framer::kind::too_long) {
      intake_.add_too_large(it.bytes, it.full_size, it.digest_lo, it.digest_hi, seq, received, cfg_.topic);
    } else {
      intake_.add(it.bytes, it.readable, seq, received, cfg_.topic, validator);
    }
  }

  void submit(int64_t started) {
    const size_t taken = intake_.hand_over(shared_from_this());
    if (taken == 0) return;
    probe_.note_received(taken);
    probe_.validate_latency.observe_ns(pipeline::steady_now_ns() - started);
    router_.submit(intake_.batches());
  }

  // Writes {"ack":N} when N grew, with "sack":[[a,b],...] naming the runs
  // of lines done beyond N since the last ack (selective_acks). One write at
  // a time: outcomes that arrive meanwhile go into the next.
  void send_ack() {
    if (writing_ || closed_) {
      finish_if_done();
      return;
    }
    ranges_.clear();
    if (cfg_.selective_acks && tracker_.unreported() > 0) tracker_.take_ranges(ranges_, max_ranges_per_ack);
    const uint64_t n = tracker_.acked();
    if (n == sent_ && ranges_.empty()) {
      finish_if_done();
      return;
    }
    writing_ = true;
    const uint64_t write = ++writes_begun_;
    ack_text_ = "{\"ack\":";
    ack_text_ += std::to_string(n);
    if (!ranges_.empty()) {
      ack_text_ += ",\"sack\":[";
      for (size_t i = 0; i < ranges_.size(); ++i) {
        ack_text_ += i == 0 ? "[" : ",[";
        ack_text_ += std::to_string(ranges_[i].first);
        ack_text_ += ',';
        ack_text_ += std::to_string(ranges_[i].last);
        ack_text_ += ']';
      }
      ack_text_ += ']';
    }
    ack_text_ += "}\n";
    const bool all_ranges = tracker_.unreported() == 0;
    asio::async_write(socket_, asio::buffer(ack_text_),
                      [self = shared_from_this(), n, write, all_ranges](boost::system::error_code ec, size_t) {
                        self->writing_ = false;
                        if (ec) {
                          self->shut();
                          return;
                        }
                        self->sent_ = n;
                        self->acks_written(n, write, all_ranges);
                        self->send_ack();
                      });
  }

  // Once reading has ended and every line read is acked, close gracefully.
  void finish_if_done() {
    if (reading_done_ && !writing_ && tracker_.acked() == tracker_.issued() && sent_ == tracker_.acked()) {
      shut();
    }
  }

  void shut() {
    if (closed_) return;
    if (writing_) return;  // the write's completion calls back here
    closed_ = true;
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    timer_.cancel();
    idle_timer_.cancel();
    probe_.connections_active.fetch_sub(1);
    intake_.release_lease();
  }

  std::atomic<int>& reading_;  // the source's count of connections still reading
  tcp::socket socket_;
  asio::steady_timer timer_;       // backpressure waits
  asio::steady_timer idle_timer_;  // idle_watch
  std::chrono::steady_clock::time_point last_line_{};
  bool quota_wait_ = false;  // the read loop waits for its tenant's quota
  const config::tcp_source cfg_;
  pipeline::router& router_;
  pipeline::source_probe& probe_;
  stages::envelope_limits limits_;
  pipeline::limits_follower limits_follower_;
  line_framer framer_;
  pipeline::ack_tracker tracker_;
  pipeline::intake intake_;
  std::string ack_text_;
  std::vector<pipeline::ack_tracker::range> ranges_;  // the runs of the ack being written
  // Bounds one ack line (about 20 bytes a run; a line of one shard's batch,
  // interleaved by key with the others', is many short runs). More waits for
  // the next write.
  static constexpr size_t max_ranges_per_ack = 1024;
  uint64_t writes_begun_ = 0;
  std::vector<due_ack> due_;  // timelines of batches whose last line is not acked yet (strand only)
  int64_t opened_ns_ = 0;     // steady ns when the connection started
  uint64_t sent_ = 0;
  bool writing_ = false;
  bool reading_done_ = false;
  bool stopping_ = false;
  bool closed_ = false;
  bool waiting_for_room_ = false;  // a room_waiter() is with the router and has not run yet
  // The tenant was over its quota after the last read: the next reads are
  // small (docs/tenants.md, "Quotas").
  bool throttled_ = false;
  static constexpr size_t throttled_read_bytes = 4096;
  pipeline::pause_timer pause_;    // the read loop waits for room (backpressure)
};

tcp_source::tcp_source(asio::io_context& ioc, config::tcp_source cfg, pipeline::router& router,
                       pipeline::source_probe& probe, stages::envelope_limits limits)
    : ioc_(ioc), cfg_(std::move(cfg)), router_(router), probe_(probe), limits_(limits), acceptor_(ioc),
      accept_timer_(ioc), pacer_("tcp source " + cfg_.listen.str()), tenancy_(stages::tenant::make_binding(cfg_.tenancy)) {}

tcp_source::~tcp_source() = default;

void tcp_source::start() {
  port_ = open_listener(acceptor_, cfg_.listen, "tcp source");
  accept();
}

void tcp_source::accept() {
  acceptor_.async_accept(asio::make_strand(ioc_), [this](boost::system::error_code ec, tcp::socket socket) {
    if (ec) {
      if (!io::accept_again_now(ec, acceptor_, pacer_, accept_timer_, [this] { accept(); })) return;
    } else if (open_connections() >= cfg_.max_connections || in_descriptor_reserve(socket.native_handle())) {
      pacer_.succeeded();
      // Over the limit: close at once rather than let it wait unserved.
      pipeline::bump(probe_.connections_refused);
      if (!refusal_logged_) {
        if (open_connections() >= cfg_.max_connections) {
          spdlog::warn("tcp source {}: at its limit of {} connections; closing new ones", cfg_.listen.str(),
                       cfg_.max_connections);
        } else {
          spdlog::warn("tcp source {}: the process is near its open file limit ({} descriptors kept for health "
                       "and database connections); closing new connections",
                       cfg_.listen.str(), descriptor_reserve);
        }
        refusal_logged_ = true;
      }
      socket.close(ec);
    } else {
      pacer_.succeeded();
      refusal_logged_ = false;
      socket.set_option(tcp::no_delay(true), ec);
      socket.set_option(asio::socket_base::keep_alive(true), ec);  // half-open peers end in an error
      auto conn = std::make_shared<tcp_connection>(std::move(socket), cfg_, router_, probe_, limits_, reading_);
      conn->set_tenancy(tenancy_);
      conns_.add(conn);
      conn->start();
    }
    accept();
  });
}

void tcp_source::stop_reading() {
  asio::post(ioc_, [this] {
    boost::system::error_code ec;
    accept_timer_.cancel();
    acceptor_.close(ec);
  });
  conns_.for_each([](auto& c) { c.stop_reading(); });
}

void tcp_source::close() {
  conns_.for_each([](auto& c) { c.close(); });
}

std::string tcp_source::describe() const {
  return "NDJSON over TCP on " + cfg_.listen.host + ":" + std::to_string(port_) + ", default topic \"" + cfg_.topic +
         "\"";
}

size_t tcp_source::open_connections() {
  return conns_.size();
}

}  // namespace evpipe::io
