#pragma once
// The body of POST /v1/events: its form (by Content-Type) and its events.
// Pure functions, any thread.

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace evpipe::io {

// text: text/plain, which browsers send without a CORS preflight (sendBeacon,
// fetch with a string body); taken only when CORS is configured.
enum class body_form : uint8_t { json, ndjson, text, unsupported };

[[nodiscard]] body_form form_of(std::string_view content_type);

// Splits a body into its events (views into `body`); false with `error` set
// when it is in none of the accepted forms.
bool split_events(const simdjson::padded_string& body, body_form form, std::vector<std::string_view>& out,
                  std::string& error);

}  // namespace evpipe::io
