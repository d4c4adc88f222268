#pragma once
// Deletes the evpipe_route_keys rows older than [route_keys] retention_s
// (docs/routes.md, "Pruning the keys"), so that the keys table holds about
// retention x message rate rows instead of growing for ever.
//
// The guarantee it keeps: a key is deleted only when its row's created_at
// (the database's now() in the transaction that first stored the message)
// is more than retention_s behind the database's now(). A redelivery written
// within retention_s of its first delivery's write still meets its key and
// stores nothing. Both times come from the database's clock, so evpipe's
// clock does not matter.
//
// Never blocks writers: each round is one small autocommit DELETE of at most
// prune_batch rows picked through the created_at index (FOR UPDATE SKIP
// LOCKED, so two evpipe processes pruning one table do not wait on each
// other), with a short statement_timeout and lock_timeout. DELETE takes the
// same table lock as the writers' COPY (ROW EXCLUSIVE), and the rows it
// deletes are ones no writer inserts: a writer can only meet one of them as a
// redelivery older than the retention, and then waits for one small DELETE
// at most.
//
// Lifecycle: made by `run` when retention_s > 0. It works only while routes
// are published (stages::route::active_routes; a reload can add the first
// ones) and holds no connection otherwise. start() runs it on its own thread with its own connection; stop() (or the
// destructor) ends it within one statement_timeout. prune_once() is the same
// work on a caller's connection, for tests and tools.

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "io/postgres/pg_connection.h"

namespace evpipe::io {

struct route_keys_pruning {
  std::string dsn;
  std::string schema;               // where evpipe_route_keys is ("" = search_path)
  uint32_t retention_s = 604'800;   // keys younger than this stay
  uint32_t batch = 1000;            // rows per DELETE
  uint32_t interval_ms = 60'000;    // pause between rounds once nothing is left to delete
};

class route_keys_pruner {
 public:
  explicit route_keys_pruner(route_keys_pruning options);
  ~route_keys_pruner();
  route_keys_pruner(const route_keys_pruner&) = delete;
  route_keys_pruner& operator=(const route_keys_pruner&) = delete;

  void start();
  void stop();

  // One round on `conn`: DELETE at most `batch` keys older than the
  // retention; their count in `deleted` (also added to the route probe's
  // keys_pruned).
  [[nodiscard]] static pg_status prune_once(pg_connection& conn, const route_keys_pruning& options,
                                            uint64_t& deleted);

 private:
  void run();
  // Waits up to `ms` or until stop(); false when stopping.
  bool pause(uint32_t ms);

  route_keys_pruning options_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace evpipe::io
