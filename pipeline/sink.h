#pragma once
// The narrow interface between a shard and the database: write one batch in
// one transaction. io/postgres_sink implements it; tests use fakes.

#include <string>

#include "stages/batch.h"

namespace evpipe::pipeline {

enum class write_status {
  committed,  // the batch's outcomes are durable (rows the database already
              // held are marked duplicate in the batch)
  retry,      // nothing was committed, or we cannot know: write the same batch again
};

// Owned by one shard thread; not thread-safe.
class batch_sink {
 public:
  virtual ~batch_sink() = default;
  [[nodiscard]] virtual write_status write(stages::write_batch& batch) = 0;
  // Whether the last operation left a usable database connection.
  [[nodiscard]] virtual bool ready() const = 0;
  // Asks the database whether it answers, reconnecting if needed; called by
  // an idle shard so that readiness follows the database without traffic.
  [[nodiscard]] virtual bool check() = 0;
  // One line on the last failure, for logs.
  [[nodiscard]] virtual std::string last_error() const = 0;
};

}  // namespace evpipe::pipeline
