#pragma once
// JSON text for what evpipe writes itself (log lines, readiness bodies, dead
// letters republished to MQTT): one string escaper, so that every line and
// body parses whatever bytes it quotes. Pure functions.

#include <string>
#include <string_view>

namespace evpipe::stages {

// Appends `s` as a JSON string literal: quotes, backslashes and control
// characters escaped, and bytes that are not UTF-8 (a client's garbage quoted
// in a message) replaced by U+FFFD.
void append_json_string(std::string& out, std::string_view s);

}  // namespace evpipe::stages
