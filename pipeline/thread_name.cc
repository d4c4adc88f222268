#include "pipeline/thread_name.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>
#include <shared_mutex>

#include <absl/container/flat_hash_map.h>

#include "stages/json_text.h"

namespace evpipe::pipeline {
namespace {

// OS thread id → the JSON object of its log fields. Written when a thread
// starts or ends, read by the log writer for each line.
struct registry {
  std::shared_mutex mu;
  absl::flat_hash_map<size_t, std::string> fields;
};
registry& threads() {
  static auto* r = new registry;  // leaked on purpose: threads and the log writer may outlive static destruction
  return *r;
}

}  // namespace

thread_name::thread_name(const std::string& name, const std::string& fields)
    : tid_(static_cast<size_t>(::syscall(SYS_gettid))) {
  // The kernel keeps 15 bytes of a thread's name; pthread_setname_np refuses longer ones. The main
  // thread keeps the process's name: it is what pidof, pkill and `systemctl status` show.
  if (tid_ != static_cast<size_t>(::getpid())) ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
  std::string object = "{\"thread\":";
  stages::append_json_string(object, name);
  if (!fields.empty()) object += "," + fields;
  object += "}";
  auto& r = threads();
  std::unique_lock lock(r.mu);
  r.fields[tid_] = std::move(object);
}

thread_name::~thread_name() {
  auto& r = threads();
  std::unique_lock lock(r.mu);
  r.fields.erase(tid_);
}

std::string thread_log_fields(size_t tid) {
  auto& r = threads();
  std::shared_lock lock(r.mu);
  auto it = r.fields.find(tid);
  return it == r.fields.end() ? std::string("{}") : it->second;
}

}  // namespace evpipe::pipeline
