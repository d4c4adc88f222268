#pragma once
// The open connections of a listening source (TCP, HTTP), for shutdown and the
// connection limit. Holds weak references: a connection lives as long as its
// own coroutines and the batches carrying its events, and leaves the set by
// expiring. Thread-safe (the acceptor adds; shutdown iterates).

#include <memory>
#include <mutex>
#include <vector>

namespace evpipe::io {

template <typename Connection>
class connection_set {
 public:
  void add(const std::shared_ptr<Connection>& c) {
    std::lock_guard lock(mu_);
    std::erase_if(conns_, [](const auto& w) { return w.expired(); });
    conns_.push_back(c);
  }

  // Calls f on every connection still alive.
  template <typename F>
  void for_each(F&& f) {
    std::lock_guard lock(mu_);
    for (auto& w : conns_) {
      if (auto c = w.lock()) f(*c);
    }
  }

  [[nodiscard]] size_t size() {
    std::lock_guard lock(mu_);
    std::erase_if(conns_, [](const auto& w) { return w.expired(); });
    return conns_.size();
  }

 private:
  std::mutex mu_;
  std::vector<std::weak_ptr<Connection>> conns_;
};

}  // namespace evpipe::io
