#include "read/stream/fanout_writers.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "read/stream/stream_hub.h"

namespace evpipe::read {

struct fanout_writers::writer {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::shared_ptr<stream_client>> queued;  // under mu
  bool stopping = false;                               // under mu
  std::thread thread;

  void run() {
    std::vector<std::shared_ptr<stream_client>> batch;
    for (;;) {
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stopping || !queued.empty(); });
        if (stopping) return;
        batch.swap(queued);
      }
      for (auto& c : batch) c->flush();
      batch.clear();  // the clients' references go here, off the hub thread
    }
  }
};

fanout_writers::fanout_writers(size_t threads) : staged_(std::max<size_t>(threads, 1)) {
  writers_.resize(staged_.size());
  for (auto& w : writers_) {
    w = std::make_unique<writer>();
    w->thread = std::thread([p = w.get()] { p->run(); });
  }
}

fanout_writers::~fanout_writers() {
  for (auto& w : writers_) {
    {
      std::lock_guard lock(w->mu);
      w->stopping = true;
    }
    w->cv.notify_one();
  }
  for (auto& w : writers_) w->thread.join();
}

void fanout_writers::stage(uint64_t id, std::shared_ptr<stream_client> c) {
  staged_[id % staged_.size()].push_back(std::move(c));
}

void fanout_writers::submit() {
  for (size_t i = 0; i < staged_.size(); ++i) {
    auto& staged = staged_[i];
    if (staged.empty()) continue;
    writer& w = *writers_[i];
    {
      std::lock_guard lock(w.mu);
      if (w.queued.empty()) {
        w.queued.swap(staged);  // the writer's emptied batch comes back as the next staging
      } else {
        // Still writing the previous read: these flushes follow its (a
        // client's second flush finds its first wrote everything).
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
