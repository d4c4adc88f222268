#include "pipeline/shard.h"

#include <algorithm>
#include <array>
#include <cstring>

#include <spdlog/spdlog.h>

#include <random>

#include "pipeline/batch_trace.h"
#include "pipeline/thread_name.h"

namespace evpipe::pipeline {

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

shard::shard(uint32_t id, shard_options opts, std::unique_ptr<batch_sink> sink, shard_probe& probe,
             metrics_registry& registry)
    : id_(id),
      opts_(opts),
      sink_(std::move(sink)),
      probe_(probe),
      registry_(registry),
      queue_(256),
      window_(opts.window_keys) {}

shard::~shard() {
  if (thread_.joinable()) stop(std::chrono::steady_clock::now());
}

void shard::start() { thread_ = std::thread([this] { run(); }); }

void shard::push(stages::event_batch&& batch) {
  probe_.queue_depth.fetch_add(static_cast<int64_t>(batch.events.size()), std::memory_order_relaxed);
  batch.queued_ns = now_ns();
  queue_.enqueue(std::move(batch));
}

void shard::set_batch_limits(uint32_t max_rows, uint32_t max_bytes, std::chrono::microseconds linger) noexcept {
  next_max_rows_.store(max_rows, std::memory_order_relaxed);
  next_max_bytes_.store(max_bytes, std::memory_order_relaxed);
  next_linger_us_.store(linger.count(), std::memory_order_relaxed);
  limits_changed_.store(true, std::memory_order_release);
  // An idle shard waits up to a second for events: wake it to take these now.
  queue_.enqueue(stages::event_batch{});
}

void shard::stop(std::chrono::steady_clock::time_point deadline) {
  stopping_.store(true);
  if (!thread_.joinable()) return;
  // Wake the thread if it waits on an empty queue.
  queue_.enqueue(stages::event_batch{});
  // The thread may be retrying a write against an unreachable database: give
  // it until the deadline, then tell it to give up.
  while (!finished_.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!finished_.load()) abandon_.store(true);
  thread_.join();
}

void shard::run() {
  thread_name named("shard-" + std::to_string(id_), "\"shard\":" + std::to_string(id_));
  struct mark_finished {
    std::atomic<bool>& f;
    ~mark_finished() { f.store(true); }
  } guard{finished_};
  std::vector<stages::event_batch> items(32);
  // Room for a batch at its limits, up to 64 MiB of COPY data and 256 Ki rows
  // (larger limits grow as rows come). A batch may pass max_bytes by its last
  // row: a little slack for that.
  const auto reserve_batch = [this] {
    constexpr size_t copy_slack = 64 << 10, most_bytes = 64 << 20, most_rows = 256 << 10;
    batch_.reserve(std::min<size_t>(opts_.max_rows, most_rows),
                   std::min<size_t>(size_t{opts_.max_bytes} + copy_slack, most_bytes));
  };
  // Readiness first: /health/ready reads db_ready from the moment the shard
  // exists (the reservation below takes a few ms under a sanitizer).
  probe_.db_ready.store(sink_->ready());
  reserve_batch();
  auto last_db_contact = std::chrono::steady_clock::now();
  for (;;) {
    if (limits_changed_.load(std::memory_order_relaxed) && limits_changed_.exchange(false, std::memory_order_acquire)) {
      opts_.max_rows = next_max_rows_.load(std::memory_order_relaxed);
      opts_.max_bytes = next_max_bytes_.load(std::memory_order_relaxed);
      opts_.linger = std::chrono::microseconds(next_linger_us_.load(std::memory_order_relaxed));
      reserve_batch();
    }
    // Until the open batch's linger ends, or, with none open, until the
    // idle database check below: an idle shard wakes once a second, not
    // every 50 ms. Events, stop() and a reload's new limits (applied above
    // before the next events are taken) need no timer: a push wakes it.
    const auto due = batch_.empty() ? last_db_contact + std::chrono::seconds(1) : batch_.opened_at() + opts_.linger;
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(due - std::chrono::steady_clock::now());
    const std::chrono::microseconds wait = left.count() > 0 ? left : std::chrono::microseconds{0};
    size_t n = queue_.wait_dequeue_bulk_timed(items.begin(), items.size(), wait);
    // A backlog (the queue grew while the last write was in flight) goes into
    // this batch whole, up to its limits (absorb flushes at them), before it
    // is written: taking only `items.size()` reads' batches per write kept
    // batches at about a hundred events while each commit took its fsync, so
    // a queue that once fell behind never caught up (issue 19: the slow-batch
    // traces of perf/run.sh latency-floor showed seconds of queue wait).
    const uint64_t batches_before = probe_.batches.load(std::memory_order_relaxed);
    while (n > 0) {
      const int64_t popped = now_ns();
      // Out of the queue: room for the sources now, not after this
      // absorb's writes (a full batch is written inside absorb).
      int64_t taken = 0;
      for (size_t i = 0; i < n; ++i) taken += static_cast<int64_t>(items[i].events.size());
      probe_.queue_depth.fetch_sub(taken, std::memory_order_relaxed);
      if (on_taken_) on_taken_();
      for (size_t i = 0; i < n; ++i) {
        if (!items[i].events.empty()) absorb(items[i], popped);
        items[i].clear();
        if (items[i].arena.capacity() > 0 && items[i].arena.capacity() <= max_spare_bytes &&
            spares_.size_approx() < max_spares) {
          spares_.enqueue(std::move(items[i]));
        }
        if (abandon_.load()) return;
      }
      // The queue is drained, or a full batch was written: back to the loop's
      // own checks (linger, stop, new limits) before taking more.
      if (n < items.size() || probe_.batches.load(std::memory_order_relaxed) != batches_before) break;
      n = queue_.try_dequeue_bulk(items.begin(), items.size());
    }
    auto now = std::chrono::steady_clock::now();
    if (!batch_.empty() && now >= batch_.opened_at() + opts_.linger) {
      flush();
      last_db_contact = std::chrono::steady_clock::now();
    } else if (batch_.empty() && now - last_db_contact >= std::chrono::seconds(1)) {
      // Idle: keep /health/ready truthful, and reconnect before events come.
      bool ok = sink_->check();
      if (ok != probe_.db_ready.load(std::memory_order_relaxed)) {
        if (ok) {
          spdlog::info("shard {}: database reachable", id_);
        } else {
          spdlog::warn("shard {}: database unreachable: {}", id_, sink_->last_error());
        }
      }
      probe_.db_ready.store(ok, std::memory_order_relaxed);
      last_db_contact = now;
    }
    // Stopping: sources no longer push, so an empty queue means drained; the
    // open batch is committed now rather than after its linger.
    if (stopping_.load(std::memory_order_relaxed) && queue_.size_approx() == 0) {
      if (!batch_.empty()) flush();
      return;
    }
    if (abandon_.load()) return;
  }
}

void shard::note_opened(const stages::event_batch& in, int64_t popped) {
  // The write batch's timeline starts with the first queued batch it takes:
  // its first event's read (the oldest of the write batch, nearly always).
  auto& tl = batch_.timeline();
  if (tl.of(stages::step::read) != 0) return;
  tl.stamp(stages::step::read, in.events.front().received_ns);
  tl.stamp(stages::step::queued, in.queued_ns);
  tl.stamp(stages::step::popped, popped);
}

void shard::absorb(stages::event_batch& in, int64_t popped) {
  int64_t t0 = now_ns();
  if (in.queued_ns > 0) probe_.stage_latency[size_t(stage::queue)].observe_ns(popped - in.queued_ns);
  note_opened(in, popped);
  // The window's memory for every key of the batch, loaded in parallel
  // (dedup_window::prefetch); `ahead` counts the inserts before this one.
  size_t ahead = 0;
  for (const auto& ev : in.events) {
    if (ev.blank || ev.why != stages::reason::none) continue;
    window_.prefetch({ev.key_hash_lo, ev.key_hash_hi}, ahead++);
  }
  batch_.begin_origin(in.origin);
  for (const auto& ev : in.events) {
    // Routed rows (and a bare message's identity) name routes of the set
    // their batch was matched against. A reload may have published another
    // set since the open batch took its first such event: that batch then
    // commits first, under its own routes, so every event is written under
    // the routes it was taken with.
    if ((ev.routed.len > 0 || ev.bare) && batch_.routes() != in.routes) {
      if (batch_.routes()) {
        batch_.timeline().stamp(stages::step::absorbed);
        flush();
        batch_.begin_origin(in.origin);
        note_opened(in, popped);
      }
      batch_.set_routes(in.routes);
    }
    if (ev.blank) {
      batch_.add_skipped(ev.seq, ev.received_ns);
    } else if (ev.why != stages::reason::none) {
      batch_.add_dead_letter(stages::route_dead_letter(in, ev), ev.seq, ev.received_ns);
    } else if (!window_.insert({ev.key_hash_lo, ev.key_hash_hi})) {
      // Its first copy is either committed or in this very batch, so acking
      // this one with the batch never precedes the original.
      batch_.add_duplicate(ev.seq, ev.received_ns);
      bump(probe_.duplicates);
    } else if (ev.routed.len > 0 || ev.skip_mirror) {
      // Taken by routes (docs/routes.md): its rows go to the routes' tables,
      // in the same transaction as the rest of the batch.
      batch_.add_routed(in.view(ev.routed), !ev.skip_mirror, in.view(ev.topic), in.view(ev.raw), in.view(ev.key),
                        in.view(ev.kind), ev.seq, ev.received_ns, in.view(ev.headers), ev.bare, in.view(ev.tenant));
    } else {
      batch_.add_row(in.view(ev.topic), in.view(ev.raw), in.view(ev.key), in.view(ev.kind), ev.seq,
                     ev.received_ns, in.view(ev.headers), ev.bare, in.view(ev.tenant));
    }
    if (batch_.event_count() >= opts_.max_rows || batch_.byte_count() >= opts_.max_bytes) {
      const int64_t t = now_ns();
      probe_.stage_latency[size_t(stage::dedup)].observe_ns(t - t0);
      batch_.timeline().stamp(stages::step::absorbed, t);
      flush();
      t0 = now_ns();
      batch_.begin_origin(in.origin);
      note_opened(in, popped);
    }
  }
  const int64_t t = now_ns();
  probe_.stage_latency[size_t(stage::dedup)].observe_ns(t - t0);
  batch_.timeline().stamp(stages::step::absorbed, t);
}

void shard::flush() {
  // Retry with exponential backoff and jitter until the batch commits; the
  // sources see backpressure meanwhile because this thread stops draining.
  int64_t t0 = now_ns();
  auto& tl = batch_.timeline();
  tl.stamp(stages::step::flushed, t0);
  tl.shard = id_;
  tl.events = static_cast<uint32_t>(batch_.event_count());
  tl.batch_no = probe_.batches.load(std::memory_order_relaxed) + 1;
  probe_.stage_latency[size_t(stage::linger)].observe_ns(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - batch_.opened_at())
          .count());
  auto delay = opts_.retry_base;
  std::minstd_rand jitter(id_ * 7919u + 1);
  bool logged = false;
  uint32_t attempts = 0;
  probe_.write_started_unix_ms.store(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  probe_.write_started_ns.store(now_ns());
  for (;;) {
    // The sink stamps what this attempt reaches; a retry's stamps replace the last one's.
    for (auto s : {stages::step::copy_start, stages::step::copy_end, stages::step::commit_sent}) tl.stamp(s, 0);
    ++tl.attempts;
    write_status st = sink_->write(batch_);
    probe_.db_ready.store(sink_->ready(), std::memory_order_relaxed);
    if (st == write_status::committed) {
      if (logged) spdlog::info("shard {}: database writes resumed", id_);
      break;
    }
    bump(probe_.db_errors);
    probe_.set_last_error(sink_->last_error());
    probe_.retrying.store(true);
    if (opts_.max_attempts > 0 && ++attempts == opts_.max_attempts &&
        (batch_.row_count() > 0 || batch_.routed_row_count() > 0)) {
      // Give up on the rows; their dead letters are written now (and retried
      // like anything else if that fails too).
      spdlog::error("shard {}: {} rows not committed after {} attempts, dead-lettering them: {}", id_,
                    batch_.row_count(), attempts, sink_->last_error());
      forget_unmirrored_keys(/*giving_up=*/true);
      batch_.dead_letter_all_rows(stages::reason::retries_exhausted,
                                  "not committed after " + std::to_string(attempts) + " attempts: " +
                                      sink_->last_error());
      continue;
    }
    bump(probe_.db_retries);
    if (!logged) {
      spdlog::warn("shard {}: batch of {} events not committed, retrying: {}", id_, batch_.event_count(),
                   sink_->last_error());
      logged = true;
    }
    auto sleep_until = std::chrono::steady_clock::now() +
                       delay / 2 + std::chrono::milliseconds(jitter() % (delay.count() / 2 + 1));
    while (std::chrono::steady_clock::now() < sleep_until) {
      if (abandon_.load()) return;  // shutdown deadline: leave these events unacked
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    delay = std::min(delay * 2, opts_.retry_max);
  }
  const int64_t committed = now_ns();
  tl.stamp(stages::step::committed, committed);
  if (opts_.on_commit && batch_.row_count() > 0) opts_.on_commit(committed);
  probe_.stage_latency[size_t(stage::write)].observe_ns(committed - t0);
  probe_.write_started_ns.store(0);
  probe_.retrying.store(false);
  probe_.last_commit_unix_ms.store(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  forget_unmirrored_keys(/*giving_up=*/false);
  bump(probe_.batches);
  bump(probe_.copy_rows, batch_.row_count());
  bump(probe_.copy_bytes, batch_.byte_count());
  record_labels();
  deliver_outcomes();
  batch_.clear();
}

void shard::forget(std::string_view key, std::string_view tenant) {
  // The window holds the key as intake hashed it: seeded with its tenant's
  // (stages/dedup.h; seed 0, the plain hash, without tenancy).
  window_.erase(stages::hash_key(key.data(), key.size(), stages::tenant_hash_seed(tenant)));
}

void shard::forget_unmirrored_keys(bool giving_up) {
  // The window holds a key from the moment its event is absorbed. A row that
  // ended in the DLQ instead of events_mirror (refused by the database, or
  // given up on) must not make a later copy look like a duplicate: a replay
  // of the dead letters would be acked and stored nowhere but the DLQ.
  const auto& outcomes = batch_.outcomes();
  for (const auto& r : batch_.rows()) {
    auto kind = outcomes[r.outcome_index].kind;
    bool unmirrored = giving_up ? kind != stages::outcome_kind::duplicate : kind == stages::outcome_kind::dead_lettered;
    if (!unmirrored) continue;
    forget(batch_.text(r.key), batch_.text(r.tenant));
  }
  for (const auto& r : batch_.routed_rows()) {
    auto kind = outcomes[r.outcome_index].kind;
    if (giving_up ? kind == stages::outcome_kind::duplicate : kind != stages::outcome_kind::dead_lettered) continue;
    forget(batch_.text(r.key), batch_.text(r.tenant));
  }
}

void shard::record_labels() {
  auto& outcomes = batch_.outcomes();
  // By tenant: one lookup per event that has a tenant (none while tenancy is off).
  auto count_tenant = [this](std::string_view tenant) {
    if (tenant.empty()) return;
    auto it = tenant_ingest_labels_.find(absl::string_view(tenant.data(), tenant.size()));
    if (it == tenant_ingest_labels_.end()) it = tenant_ingest_labels_.emplace(std::string(tenant), 0).first;
    ++it->second;
  };
  // A batch holds a few (topic, kind) pairs many times over: a small cache of
  // the pairs seen in this batch counts a row without building and hashing
  // its label key. Its pointers are into ingest_labels_, so it is emptied
  // whenever a new key may have moved the map's values.
  struct label_hit {
    std::string_view topic, kind;
    uint64_t* count = nullptr;
  };
  std::array<label_hit, 8> seen{};  // 8 = 2^3: the top 3 bits of h pick a slot
  auto slot = [&seen](std::string_view topic, std::string_view kind) -> label_hit& {
    // Kinds differ most at their end ("project_created", "project_updated").
    uint64_t tail = 0;
    const size_t n = std::min<size_t>(kind.size(), sizeof tail);
    std::memcpy(&tail, kind.data() + kind.size() - n, n);
    const uint64_t h = (tail ^ (kind.size() << 56) ^ topic.size()) * 0x9E3779B97F4A7C15ull;
    return seen[h >> 61];
  };
  for (const auto& r : batch_.rows()) {
    if (outcomes[r.outcome_index].kind != stages::outcome_kind::mirrored) {
      bump(probe_.duplicates);
      continue;
    }
    count_tenant(batch_.text(r.tenant));
    const std::string_view topic = batch_.text(r.topic), kind = batch_.text(r.kind);
    const label_hit& hit = slot(topic, kind);
    if (hit.count != nullptr && hit.kind == kind && hit.topic == topic) {
      ++*hit.count;
      continue;
    }
    label_key_.assign(topic);
    label_key_.push_back(label_sep);
    label_key_.append(kind);
    auto it = ingest_labels_.find(label_key_);
    if (it == ingest_labels_.end()) {
      it = ingest_labels_.emplace(label_key_, 0).first;
      seen = {};
    }
    ++it->second;
    slot(topic, kind) = {topic, kind, &it->second};
  }
  // Routed events without an events_mirror row are ingested too.
  for (const auto& r : batch_.routed_rows()) {
    if (!r.counts_event || outcomes[r.outcome_index].kind != stages::outcome_kind::mirrored) continue;
    label_key_.assign(batch_.text(r.topic));
    label_key_.push_back(label_sep);
    label_key_.append(batch_.text(r.kind));
    ++ingest_labels_[label_key_];
    count_tenant(batch_.text(r.tenant));
  }
  for (const auto& dl : batch_.dead_letters()) {
    // PostgreSQL refused the row this time too, whether or not its dead letter is new.
    if (dl.why == stages::reason::db_rejected) registry_.add_db_rejected(dl.sqlstate, 1);
    if (dl.already_stored) {
      // Acked as dead-lettered, but no new row: counted as a resend only.
      registry_.add_dlq_duplicate(stages::reason_code(dl.why), 1);
      continue;
    }
    label_key_.assign(dl.topic);
    label_key_.push_back(label_sep);
    label_key_.append(stages::reason_code(dl.why));
    ++dlq_labels_[label_key_];
    if (!dl.tenant.empty()) {
      label_key_.assign(dl.tenant);
      label_key_.push_back(label_sep);
      label_key_.append(stages::reason_code(dl.why));
      ++tenant_dlq_labels_[label_key_];
    }
  }
  if (!ingest_labels_.empty()) registry_.add_ingested(ingest_labels_);
  if (!dlq_labels_.empty()) registry_.add_dead_lettered(dlq_labels_);
  if (!tenant_ingest_labels_.empty()) registry_.add_ingested_by_tenant(tenant_ingest_labels_);
  if (!tenant_dlq_labels_.empty()) registry_.add_dead_lettered_by_tenant(tenant_dlq_labels_);
  // Keep the keys (and their memory) for the next batch; only zero the counts.
  for (auto* labels : {&ingest_labels_, &dlq_labels_, &tenant_ingest_labels_, &tenant_dlq_labels_}) {
    for (auto& [k, n] : *labels) n = 0;
    if (labels->size() > 4096) labels->clear();
  }
}

void shard::deliver_outcomes() {
  const auto& origins = batch_.origins();
  if (by_origin_.size() < origins.size()) by_origin_.resize(origins.size());
  int64_t now = now_ns();
  for (const auto& p : batch_.outcomes()) {
    by_origin_[p.origin].push_back(stages::outcome{p.seq, p.kind, p.why});
    probe_.event_latency.observe_ns(now - p.received_ns);
  }
  auto& tl = batch_.timeline();
  tl.stamp(stages::step::ack_posted, now);
  // Slow already: this thread's faults and switches go with the timeline
  // (one getrusage, for slow batches only).
  if (is_slow(tl, stages::step::ack_posted, slow_batch_threshold_ns())) tl.shard_thread = thread_usage_since_last();
  bool all_timed = true;  // every origin finishes its own copy of the timeline
  for (size_t i = 0; i < origins.size(); ++i) {
    if (!by_origin_[i].empty()) {
      tl.stamp(stages::step::ack_posted);
      all_timed &= origins[i]->on_outcomes_timed(by_origin_[i], tl);
      by_origin_[i].clear();
    }
  }
  probe_.stage_latency[size_t(stage::ack_post)].observe_ns(tl.of(stages::step::ack_posted) -
                                                           tl.of(stages::step::committed));
  if (!all_timed) (void)finish_timeline(tl, stages::step::ack_posted, /*on_io_thread=*/false);
}

}  // namespace evpipe::pipeline
