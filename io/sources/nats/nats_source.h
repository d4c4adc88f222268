#pragma once
// Where events enter from NATS JetStream: evpipe reads a stream through a
// durable pull consumer with explicit acks (docs/nats.md).
//
// Each message is an event whose topic is its subject ('.' turned into
// topic_separator); it is acked only once the shards report its outcome
// (row, duplicate or dead letter) as committed, so a crash at any point
// leaves it to the server to redeliver, and the dedup window and the unique
// index meet the copy. Pulling stops while `max_ack_pending` messages of a
// consumer are unacked or a shard queue is full (backpressure). A message that
// waits long for its commit (the database is down and the shard retries)
// gets an in-progress ack every third of the consumer's AckWait, so the
// server does not redeliver the whole window meanwhile. A message delivered
// more than `max_deliveries` times is dead-lettered as max_deliveries without
// being looked at: one that crashes the process cannot do it forever.
//
// Lifecycle (io/source.h): start() connects once and sets the consumers up,
// throwing on what retrying cannot fix (refused credentials, a missing
// stream, unreadable TLS files); a server that is not reachable yet is
// retried in the background. Threads: one puller per consumer (it blocks in
// natsSubscription_Fetch), one acker for the source (acks and in-progress
// acks), and the client library's own. The public functions are thread-safe.

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "io/source.h"
#include "pipeline/metrics.h"
#include "pipeline/router.h"
#include "stages/validate.h"

struct __natsConnection;
struct __natsOptions;
struct __jsCtx;

namespace evpipe::io {

class nats_consumer;

class nats_source final : public source {
 public:
  nats_source(config::nats_source cfg, pipeline::router& router, pipeline::source_probe& probe,
              stages::envelope_limits limits);
  ~nats_source() override;

  void start() override;
  void stop_reading() override;
  void close() override;
  [[nodiscard]] int reading_connections() const noexcept override { return reading_.load(); }
  // 1 while a consumer holds messages not yet acked, else 0.
  [[nodiscard]] size_t open_connections() override;
  [[nodiscard]] std::string describe() const override;

  // For /health/ready, from any thread.
  struct readiness {
    bool connected = false;
    size_t consumers = 0;       // configured
    size_t consumers_ready = 0; // bound and pulling
    std::string problem;        // the last setup failure ("" when none)
    bool problem_is_config = false;  // refused credentials, missing stream: not fixed by waiting
    bool closed_for_good = false;    // the library closed the connection and will not reconnect (`problem` says why)
  };
  [[nodiscard]] readiness ready_state() const;

  // Shared with the consumers and the library's callbacks; owned by the source.
  struct shared {
    shared(const config::nats_source& c, pipeline::router& r, pipeline::source_probe& p, stages::envelope_limits l)
        : cfg(c), router(r), probe(p), limits(l) {}
    // A copy: the library's callbacks read it, and may outlive the source
    // (close()).
    const config::nats_source cfg;
    pipeline::router& router;
    pipeline::source_probe& probe;
    stages::envelope_limits limits;
    __natsConnection* conn = nullptr;
    __jsCtx* js = nullptr;
    std::atomic<bool> stopping{false};
    std::atomic<bool> connected{false};
    // The acker sleeps here; committed outcomes wake it.
    std::mutex ack_mu;
    std::condition_variable ack_cv;
    bool ack_wanted = false;
    mutable std::mutex problem_mu;
    std::string problem;
    bool problem_is_config = false;
    void set_problem(std::string p, bool config);
    // Set by the library's closed callback, the last it runs for the
    // connection (after the disconnected one): this object may go then.
    std::mutex closed_mu;
    std::condition_variable closed_cv;
    bool closed = false;
    // The library closed it on its own (credentials refused twice on a
    // reconnect, an error it does not know): it will not reconnect.
    std::atomic<bool> gave_up{false};
  };

 private:
  void connect_or_throw();
  void acker_loop();

  const config::nats_source cfg_;
  std::unique_ptr<shared> sh_;
  __natsOptions* opts_ = nullptr;
  std::vector<std::shared_ptr<nats_consumer>> consumers_;
  std::vector<std::thread> pullers_;
  std::thread acker_;
  std::atomic<bool> acker_stop_{false};
  std::atomic<int> reading_{0};
  std::once_flag closed_;
  bool keep_shared_ = false;  // the library did not say it closed: sh_ is left to it (close())
};

}  // namespace evpipe::io
