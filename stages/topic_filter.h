#pragma once
// MQTT topic filters, the one implementation for every user: the MQTT
// source (filters it no longer subscribes), routes, and readers (replay
// --topic, stream subscriptions):
// levels split by '/', '+' matches one level, '#' (last level only) matches
// the rest, including the parent ("a/#" matches "a"). As in MQTT, a wildcard
// in the first level does not match a topic that starts with '$'.
// Pure functions; thread-safe.

#include <string>
#include <string_view>

namespace evpipe::stages {

// "" when `filter` is a valid filter, else what is wrong with it.
[[nodiscard]] std::string topic_filter_problem(std::string_view filter);

// Whether `topic` matches the (valid) `filter`.
[[nodiscard]] bool topic_matches(std::string_view filter, std::string_view topic) noexcept;

// The (valid) filter as an anchored PostgreSQL regular expression, so that a
// reader filters in the database (`topic ~ '<regex>'`) exactly as
// topic_matches() does.
[[nodiscard]] std::string topic_filter_regex(std::string_view filter);

}  // namespace evpipe::stages
