#pragma once
// The SQL that `evpipe migrate` applies, compiled in from schemas/*.sql so the
// binary and its schema never drift apart.

#include <string_view>

namespace evpipe::schemas {

// events.sql: events_mirror, dlq_events and their indexes. Idempotent.
[[nodiscard]] std::string_view events_ddl() noexcept;

// Table names the pipeline writes to.
inline constexpr std::string_view mirror_table = "events_mirror";
inline constexpr std::string_view dlq_table = "dlq_events";

}  // namespace evpipe::schemas
