#pragma once
// A WebSocket client's subscriptions (docs/read.md, "The live stream"): each
// `subscribe` message is one (its topics and its kinds: a row_clause), and
// an event goes to the client when it matches any of them. Kept small: a
// subscribe that an existing one already covers adds nothing, and one that
// differs from an existing one in a single list widens that list instead.

#include <cstddef>
#include <string>
#include <vector>

#include "read/table_reader.h"

namespace evpipe::read {

// `subscribe` with these topics and kinds (both empty: every event).
void add_subscription(std::vector<row_clause>& subs, row_clause add);

// `unsubscribe`: takes these topics and kinds out of every subscription that
// names them; a subscription left with none of the topics (or kinds) it
// named ends, rather than widen to every topic (kind). One that takes every
// topic (kind) cannot have one taken out and stays. Both empty: every
// subscription ends.
void remove_subscription(std::vector<row_clause>& subs, const std::vector<std::string>& topics,
                         const std::vector<std::string>& kinds);

// Topics and kinds named in all (what `max_filters` limits).
[[nodiscard]] size_t filter_count(const std::vector<row_clause>& subs);

}  // namespace evpipe::read
