#pragma once
// Names the threads of the daemon, for the operator and for the logs.
//
// A thread that holds a thread_name is named for the OS (`top -H`, `ps -L`,
// /proc/PID/task/TID/comm; at most 15 bytes; not the main thread, whose name
// is the process's) and registered with its log
// fields: every line it logs carries them in the JSON log's "fields" object
// ({"thread":"shard-1","shard":1}). The log writer formats lines on its own
// thread, later, so it finds the fields by the OS thread id the line was
// logged from (spdlog's log_msg::thread_id) rather than in a thread_local.
//
// Lifecycle: construct first thing in the thread's body, before it logs; the
// registration ends with the object. Lines a thread logged just before it
// ended may be written without its fields. Thread-safe.

#include <cstddef>
#include <cstdint>
#include <string>

namespace evpipe::pipeline {

class thread_name {
 public:
  // `name` becomes the OS name and the "thread" field; `fields` is more of the
  // log object's members, as JSON text without braces (`"shard":1`), or empty.
  explicit thread_name(const std::string& name, const std::string& fields = {});
  ~thread_name();
  thread_name(const thread_name&) = delete;
  thread_name& operator=(const thread_name&) = delete;

 private:
  size_t tid_;
};

// The log fields of the thread with OS id `tid` as a JSON object ("{...}"),
// or "{}" when that thread holds no thread_name.
[[nodiscard]] std::string thread_log_fields(size_t tid);

}  // namespace evpipe::pipeline
