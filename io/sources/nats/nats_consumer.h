#pragma once
// One JetStream durable pull consumer of a [[sources.nats]] (one per filter
// subject): sets the consumer up, pulls messages into the pipeline, keeps
// each until its outcome commits, and hands it to the source's acker.
// Private to io/sources/nats: nats_source.cc drives it.
//
// Threads: pull_loop() runs on its own thread; on_outcomes() comes from shard
// threads; take_acks() and send_progress() from the acker. One mutex guards
// the messages held.

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "io/sources/nats/nats_source.h"
#include "pipeline/intake.h"
#include "stages/event.h"

namespace evpipe::io {

// The topic of a subject: each '.' becomes `separator`.
[[nodiscard]] std::string nats_topic(std::string_view subject, std::string_view separator);

class nats_consumer final : public stages::event_origin, public std::enable_shared_from_this<nats_consumer> {
 public:
  // `name`: the durable consumer's name; `filter`: its filter subject ("" = all).
  nats_consumer(nats_source::shared& sh, std::string name, std::string filter);
  ~nats_consumer() override;

  // Looks the durable consumer up, creates it when missing, and binds a pull
  // subscription to it. An empty string when done; else why not, with
  // `config_problem` set when waiting will not help (missing stream, denied).
  [[nodiscard]] std::string setup(bool& config_problem);
  [[nodiscard]] bool ready() const noexcept { return ready_.load(); }

  // Pulls until the source stops reading.
  void pull_loop();

  // From shard threads: these messages' outcomes are committed.
  void on_outcomes(std::span<const stages::outcome> outcomes) override;

  // The acker's side: acks what committed; sends in-progress acks for what has
  // waited longer than the progress interval. Return how many.
  size_t ack_committed();
  size_t send_progress(std::chrono::steady_clock::time_point now);
  // Messages pulled and not yet acked.
  [[nodiscard]] size_t unacked() const;
  // At close: gives up what is held (the server redelivers it).
  void release_all();
  // Ends the puller's wait for room (a stop; acks and the shards' room wake it themselves).
  void wake();

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::chrono::milliseconds progress_every() const noexcept {
    return std::chrono::milliseconds(progress_every_ms_.load(std::memory_order_relaxed));
  }

 private:
  struct held {
    natsMsg* msg = nullptr;  // null once handed to the acker
    std::chrono::steady_clock::time_point progress_at;  // when the next in-progress ack is due
  };

  // Waits while the pipeline or the consumer has no room; false when stopping.
  bool wait_for_room();
  void take(natsMsg* m, std::chrono::steady_clock::time_point now);
  void submit();

  nats_source::shared& sh_;
  const std::string name_, filter_;
  natsSubscription* sub_ = nullptr;
  std::atomic<bool> ready_{false};            // sub_ is bound (read by readiness)
  std::atomic<int64_t> progress_every_ms_{10'000};  // a third of the consumer's AckWait, once known

  mutable std::mutex mu_;
  std::deque<held> held_;          // by seq: held_[seq - first_seq_]
  uint64_t first_seq_ = 1;         // seq of held_.front()
  uint64_t next_seq_ = 1;
  size_t unacked_ = 0;             // pulled, not yet acked (held with a msg, or in to_ack_)
  std::vector<natsMsg*> to_ack_;   // committed, for the acker
  bool released_ = false;
  bool told_stray_ = false;        // an outcome for a seq not held was logged
  uint64_t wakes_ = 0;             // bumped by wake() and by acks: the puller's wait ends
  std::condition_variable room_cv_;
  std::atomic<bool> waiting_for_room_{false};  // a waiter is with the router and has not run yet

  // Puller-thread state.
  pipeline::intake intake_;
  stages::envelope_limits limits_;
  pipeline::limits_follower limits_follower_;
  std::string padded_;             // a message's bytes with the validator's padding
  std::string subject_, topic_;    // the last message's subject, and its topic
  bool told_foreign_ = false;      // a fetched message that was no JetStream delivery was logged
  std::vector<natsMsg*> fetched_;  // one fetch's messages, reused
  uint64_t held_taken_ = 0;        // messages of late pull requests taken one by one (nats_fetch.h)
  bool told_held_ = false;
};

}  // namespace evpipe::io
