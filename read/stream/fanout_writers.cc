#include "read/stream/fanout_writers.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>

#include "read/stream/stream_hub.h"

namespace evpipe::read {

struct fanout_writers::writer {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::shared_ptr<stream_client>> queued;  // under mu
  size_t queued_bytes = 0;                             // the reads `queued` is of (under mu)
  bool stopping = false;                               // under mu
  std::thread thread;

  void run(fanout_writers& all) {
    std::vector<std::shared_ptr<stream_client>> batch;
    bool was_over = false;
    for (;;) {
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stopping || !queued.empty(); });
        if (stopping) return;
        batch.swap(queued);
        was_over = std::exchange(queued_bytes, 0) > all.run_ahead_bytes_;
        if (was_over) all.over_.fetch_sub(1, std::memory_order_acq_rel);
      }
      if (was_over && all.on_taken_) all.on_taken_();
      for (auto& c : batch) c->flush();
      batch.clear();  // the clients' references go here, off the hub thread
    }
  }
};

fanout_writers::fanout_writers(size_t threads, size_t run_ahead_bytes, std::function<void()> on_taken)
    : run_ahead_bytes_(run_ahead_bytes), on_taken_(std::move(on_taken)), staged_(std::max<size_t>(threads, 1)) {
  writers_.resize(staged_.size());
  for (auto& w : writers_) w = std::make_unique<writer>();
  try {
    for (auto& w : writers_) w->thread = std::thread([this, p = w.get()] { p->run(*this); });
  } catch (...) {
    join();  // the threads started end before the writers they run go
    throw;
  }
}

fanout_writers::~fanout_writers() { join(); }

void fanout_writers::join() {
  request_stop();
  for (auto& w : writers_) {
    if (w->thread.joinable()) w->thread.join();
  }
}

void fanout_writers::request_stop() {
  for (auto& w : writers_) {
    {
      std::lock_guard lock(w->mu);
      w->stopping = true;
    }
    w->cv.notify_one();
  }
}

void fanout_writers::stage(uint64_t id, std::shared_ptr<stream_client> c) {
  staged_[id % staged_.size()].push_back(std::move(c));
}

void fanout_writers::submit(size_t read_bytes) {
  for (size_t i = 0; i < staged_.size(); ++i) {
    auto& staged = staged_[i];
    if (staged.empty()) continue;
    writer& w = *writers_[i];
    {
      std::lock_guard lock(w.mu);
      const bool was_over = w.queued_bytes > run_ahead_bytes_;
      w.queued_bytes += read_bytes;
      if (!was_over && w.queued_bytes > run_ahead_bytes_) over_.fetch_add(1, std::memory_order_acq_rel);
      if (w.queued.empty()) {
        w.queued.swap(staged);  // the writer's emptied batch comes back as the next staging
      } else {
        // The writer is still busy with an earlier read: these follow (a
        // client's later flush finds its earlier one wrote everything).
        w.queued.insert(w.queued.end(), std::make_move_iterator(staged.begin()), std::make_move_iterator(staged.end()));
      }
    }
    staged.clear();
    w.cv.notify_one();
  }
}

size_t fanout_writers::default_threads() {
  return std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 4);
}

}  // namespace evpipe::read
