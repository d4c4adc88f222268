#pragma once
// The message evpipe republishes to the broker for a committed dead letter
// (`dlq_publish`), in the TaylorDash DLQ format: topic
// `<dlq_prefix><original topic with / as _>`, body
// {"original_topic", "failure_reason", "failure_timestamp", "payload"}.
// Pure functions; the dlq_events row stays the record.

#include <string>
#include <string_view>

#include "stages/event.h"

namespace evpipe::io {

[[nodiscard]] std::string dead_letter_topic(std::string_view dlq_prefix, std::string_view original_topic);

// `payload` is embedded as JSON when it parsed (every reason but invalid_json
// and too_large), else as a JSON string. `mqtt_properties`: a JSON object of
// the message's MQTT 5 content type and user properties, added as
// "mqtt_properties" when not empty.
[[nodiscard]] std::string dead_letter_body(std::string_view original_topic, stages::reason why,
                                           std::string_view payload, std::string_view mqtt_properties = {});

}  // namespace evpipe::io
