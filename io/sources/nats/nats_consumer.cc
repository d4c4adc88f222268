#include "io/sources/nats/nats_consumer.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "io/sources/nats/nats_fetch.h"
#include "io/sources/nats/nats_reply.h"
#include "stages/tenant/binding.h"

namespace evpipe::io {

using namespace std::chrono_literals;

namespace {

// What the client library says about the last failure on this thread.
std::string nats_error(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  const char* detail = nats_GetLastError(nullptr);
  if (detail != nullptr && *detail != '\0' && text.find(detail) == std::string::npos) text += std::string(": ") + detail;
  return text;
}

}  // namespace

std::string nats_topic(std::string_view subject, std::string_view separator) {
  std::string t;
  t.reserve(subject.size());
  for (char c : subject) {
    if (c == '.') {
      t.append(separator);
    } else {
      t.push_back(c);
    }
  }
  return t;
}

nats_consumer::nats_consumer(nats_source::shared& sh, std::string name, std::string filter)
    : sh_(sh), name_(std::move(name)), filter_(std::move(filter)), intake_(sh.router.shard_count(), sh.limits),
      limits_(sh.limits) {
  intake_.set_tenancy(stages::tenant::make_binding(sh.cfg.tenancy));
}

nats_consumer::~nats_consumer() { release_all(); }

std::string nats_consumer::setup(bool& config_problem) {
  config_problem = false;
  const auto& cfg = sh_.cfg;
  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetConsumerInfo(&ci, sh_.js, cfg.stream.c_str(), name_.c_str(), nullptr, &jerr);
  if (jerr == JSStreamNotFoundErr) {
    config_problem = true;
    return "stream \"" + cfg.stream + "\" does not exist on the server (create it first: docs/nats.md)";
  }
  if (s != NATS_OK && jerr == JSConsumerNotFoundErr) {
    // A durable pull consumer with explicit acks. MaxDeliver stays unlimited:
    // evpipe itself dead-letters past max_deliveries, and a server-side limit
    // would leave such a message unacked and undelivered forever.
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = name_.c_str();
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckWait = int64_t{cfg.ack_wait_s} * 1'000'000'000;
    cc.MaxDeliver = -1;
    cc.MaxAckPending = cfg.max_ack_pending;
    if (!filter_.empty()) cc.FilterSubject = filter_.c_str();
    jerr = static_cast<jsErrCode>(0);
    s = js_AddConsumer(&ci, sh_.js, cfg.stream.c_str(), &cc, nullptr, &jerr);
    if (s == NATS_OK) spdlog::info("nats: created durable consumer \"{}\" on stream \"{}\"", name_, cfg.stream);
  }
  if (s != NATS_OK) {
    config_problem = s == NATS_NOT_PERMITTED || jerr == JSStreamNotFoundErr;
    return "consumer \"" + name_ + "\" on stream \"" + cfg.stream + "\": " + nats_error(s) +
           (jerr != 0 ? " (JetStream error " + std::to_string(jerr) + ")" : "");
  }
  std::string problem;
  const jsConsumerConfig* cc = ci->Config;
  if (cc->AckPolicy != js_AckExplicit) {
    problem = "consumer \"" + name_ + "\" exists without explicit acks; evpipe needs AckPolicy explicit (use another durable)";
  } else if (cc->DeliverSubject != nullptr && *cc->DeliverSubject != '\0') {
    problem = "consumer \"" + name_ + "\" is a push consumer; evpipe needs a pull consumer (use another durable)";
  } else if (std::string_view(cc->FilterSubject ? cc->FilterSubject : "") != filter_) {
    problem = "consumer \"" + name_ + "\" exists with filter subject \"" + (cc->FilterSubject ? cc->FilterSubject : "") +
              "\", not \"" + filter_ + "\" (use another durable, or delete the old consumer)";
  }
  // In-progress acks three times per AckWait: one lost or late still leaves
  // two before the server would redeliver.
  progress_every_ms_.store(std::max<int64_t>(100, cc->AckWait / 3 / 1'000'000));
  jsConsumerInfo_Destroy(ci);
  if (!problem.empty()) {
    config_problem = true;
    return problem;
  }

  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = cfg.stream.c_str();
  so.Consumer = name_.c_str();
  jerr = static_cast<jsErrCode>(0);
  natsSubscription* sub = nullptr;
  s = js_PullSubscribe(&sub, sh_.js, filter_.empty() ? nullptr : filter_.c_str(), name_.c_str(), nullptr, &so, &jerr);
  if (s != NATS_OK) return "binding to consumer \"" + name_ + "\": " + nats_error(s);
  std::lock_guard lock(mu_);
  sub_ = sub;
  ready_.store(true);
  return {};
}

void nats_consumer::wake() {
  {
    std::lock_guard lock(mu_);
    ++wakes_;
  }
  room_cv_.notify_all();
}

bool nats_consumer::wait_for_room() {
  pipeline::pause_timer pause;
  while (!sh_.stopping.load(std::memory_order_relaxed)) {
    uint64_t seen;
    {
      std::lock_guard lock(mu_);
      seen = wakes_;  // before looking: a wake after this ends the wait below
    }
    const bool room = sh_.router.has_room();
    if (room && unacked() < sh_.cfg.max_ack_pending) {
      pause.end(sh_.probe);
      return true;
    }
    pause.begin(sh_.probe);
    // Nothing polls: acks (ack_committed) and the full shard, once it has
    // room (router::wait_for_room), wake this thread, and so does a stop.
    if (!room && !waiting_for_room_.exchange(true)) {
      std::weak_ptr<nats_consumer> w = weak_from_this();
      if (!sh_.router.wait_for_room(pipeline::intake::unpinned, {w, [w] {
                                      if (auto self = w.lock()) {
                                        self->waiting_for_room_.store(false);
                                        self->wake();
                                      }
                                    }})) {
        waiting_for_room_.store(false);
        continue;  // room came meanwhile
      }
    }
    std::unique_lock lock(mu_);
    room_cv_.wait_for(lock, 1s, [&] { return wakes_ != seen || sh_.stopping.load(); });
  }
  pause.end(sh_.probe);
  return false;
}

void nats_consumer::pull_loop() {
  auto last_error_log = std::chrono::steady_clock::time_point{};
  while (!sh_.stopping.load(std::memory_order_relaxed)) {
    if (!wait_for_room()) break;
    if (limits_follower_.changed(limits_)) intake_.set_limits(limits_);
    int n = static_cast<int>(std::min<size_t>(sh_.cfg.fetch_batch, sh_.cfg.max_ack_pending - unacked()));
    fetched_.clear();
    uint64_t held_before = held_taken_;
    // A short wait, so that stop_reading() is seen soon; the call returns at
    // once when messages are there. Not natsSubscription_Fetch directly: see
    // nats_fetch.h (a libnats 3.4.1 overflow).
    natsStatus s = fetch_messages(sub_, n, 250, fetched_, &held_taken_);
    if (held_taken_ != held_before && !told_held_) {
      spdlog::warn("nats: consumer \"{}\": took messages a late pull request delivered one by one (libnats < 3.9 "
                   "fetch overflow avoided, docs/nats.md); told once", name_);
      told_held_ = true;
    }
    if (s == NATS_TIMEOUT) continue;
    if (s != NATS_OK) {
      pipeline::bump(sh_.probe.nats_fetch_errors);
      auto now = std::chrono::steady_clock::now();
      if (now - last_error_log > 10s && sh_.connected.load()) {
        spdlog::warn("nats: pulling from consumer \"{}\": {}", name_, nats_error(s));
        last_error_log = now;
      }
      std::this_thread::sleep_for(100ms);
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    for (natsMsg* m : fetched_) {
      const char* reply = natsMsg_GetReply(m);
      if (natsMsg_GetSubject(m) == nullptr || reply == nullptr || std::strncmp(reply, "$JS.ACK.", 8) != 0) {
        // Not a JetStream delivery (a status the library let through): it
        // cannot be acked, and its metadata cannot be read.
        pipeline::bump(sh_.probe.nats_fetch_errors);
        if (!told_foreign_) {
          spdlog::warn("nats: consumer \"{}\": dropped a fetched message that is not a JetStream delivery (subject "
                       "{}, reply {}); told once", name_, natsMsg_GetSubject(m) ? natsMsg_GetSubject(m) : "(none)",
                       reply ? reply : "(none)");
          told_foreign_ = true;
        }
        natsMsg_Destroy(m);
        continue;
      }
      take(m, now);  // ours now, until acked
    }
    fetched_.clear();
    submit();
  }
}

void nats_consumer::take(natsMsg* m, std::chrono::steady_clock::time_point now) {
  // pull_loop took only messages with a "$JS.ACK." reply; one the server
  // wrote in another form counts as a first delivery.
  const uint64_t delivered = nats_delivery_count(natsMsg_GetReply(m)).value_or(1);
  // Most messages come on the subject of the one before.
  if (const std::string_view subject = natsMsg_GetSubject(m); subject != subject_) {
    subject_.assign(subject);
    topic_ = nats_topic(subject, sh_.cfg.topic_separator);
  }
  std::string_view data(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
  uint64_t seq = 0;
  {
    std::lock_guard lock(mu_);
    seq = next_seq_++;
    held_.push_back({m, now + progress_every()});
    ++unacked_;
  }
  sh_.probe.unacked.fetch_add(1, std::memory_order_relaxed);
  const int64_t received = pipeline::steady_now_ns();
  const uint32_t max = sh_.cfg.max_deliveries;
  if (max != 0 && delivered > max) {
    // Not parsed, not validated: whatever this message does to evpipe (or to
    // the database) must not happen again. Its dead letter is acked like a row.
    std::string why = "delivered " + std::to_string(delivered) + " times, over max_deliveries = " + std::to_string(max);
    spdlog::warn("nats: consumer \"{}\": a message on {} was {}: dead-lettered unprocessed", name_,
                 natsMsg_GetSubject(m), why);
    intake_.add_unprocessed(data, stages::reason::max_deliveries, why, seq, received, topic_);
    pipeline::bump(sh_.probe.nats_max_deliveries);
    return;
  }
  padded_.assign(data);
  padded_.resize(data.size() + simdjson::SIMDJSON_PADDING);
  intake_.add(std::string_view(padded_.data(), data.size()), padded_.size(), seq, received, topic_,
              pipeline::thread_validator(limits_), pipeline::topic_rule::source_only);
}

void nats_consumer::submit() {
  const size_t taken = intake_.hand_over(shared_from_this());
  if (taken == 0) return;
  sh_.probe.note_received(taken);
  sh_.router.submit(intake_.batches());
}

void nats_consumer::on_outcomes(std::span<const stages::outcome> outcomes) {
  {
    std::lock_guard lock(mu_);
    if (released_) return;  // closed: the server redelivers what was not acked
    for (const auto& o : outcomes) {
      // Each seq gets one outcome. One outside what is held (or reported
      // twice) would be a broken invariant upstream: logged and counted,
      // never written outside the deque.
      if (o.seq < first_seq_ || o.seq - first_seq_ >= held_.size() || held_[o.seq - first_seq_].msg == nullptr) {
        pipeline::bump(sh_.probe.nats_fetch_errors);
        if (!told_stray_) spdlog::error("nats: consumer \"{}\": an outcome for seq {} that is not held (first {}, held {})",
                                        name_, o.seq, first_seq_, held_.size());
        told_stray_ = true;
        continue;
      }
      auto& h = held_[o.seq - first_seq_];
      to_ack_.push_back(h.msg);
      h.msg = nullptr;
    }
    while (!held_.empty() && held_.front().msg == nullptr) {
      held_.pop_front();
      ++first_seq_;
    }
  }
  {
    std::lock_guard lock(sh_.ack_mu);
    sh_.ack_wanted = true;
  }
  sh_.ack_cv.notify_one();
}

size_t nats_consumer::ack_committed() {
  std::vector<natsMsg*> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(to_ack_);
  }
  for (natsMsg* m : batch) {
    // Fire and forget: an ack lost with the connection only means a
    // redelivery, which the dedup window and the unique index absorb.
    (void)natsMsg_Ack(m, nullptr);
    natsMsg_Destroy(m);
  }
  if (!batch.empty()) {
    {
      std::lock_guard lock(mu_);
      unacked_ -= batch.size();
      ++wakes_;  // the puller may wait for these (max_ack_pending)
    }
    room_cv_.notify_all();
  }
  pipeline::bump(sh_.probe.nats_acks, batch.size());
  sh_.probe.unacked.fetch_sub(static_cast<int64_t>(batch.size()), std::memory_order_relaxed);
  return batch.size();
}

size_t nats_consumer::send_progress(std::chrono::steady_clock::time_point now) {
  size_t n = 0;
  std::lock_guard lock(mu_);
  for (auto& h : held_) {
    if (h.msg == nullptr || now < h.progress_at) continue;
    (void)natsMsg_InProgress(h.msg, nullptr);
    h.progress_at = now + progress_every();
    ++n;
  }
  pipeline::bump(sh_.probe.nats_in_progress, n);
  return n;
}

size_t nats_consumer::unacked() const {
  std::lock_guard lock(mu_);
  return unacked_;
}

void nats_consumer::release_all() {
  std::lock_guard lock(mu_);
  if (released_) return;
  released_ = true;
  size_t dropped = 0;
  for (auto& h : held_) {
    if (h.msg != nullptr) {
      natsMsg_Destroy(h.msg);
      ++dropped;
    }
  }
  for (natsMsg* m : to_ack_) natsMsg_Destroy(m);
  dropped += to_ack_.size();
  held_.clear();
  to_ack_.clear();
  sh_.probe.unacked.fetch_sub(static_cast<int64_t>(dropped), std::memory_order_relaxed);
  unacked_ = 0;
  // Destroying the subscription does not delete the durable consumer (it was
  // bound, not created, by the library): the next start resumes it.
  if (sub_ != nullptr) natsSubscription_Destroy(sub_);
  sub_ = nullptr;
  ready_.store(false);
}

}  // namespace evpipe::io
