#include "io/sources/mqtt/mqtt_dead_letter.h"

#include <chrono>
#include <cstdio>
#include <ctime>

#include "stages/json_text.h"

namespace evpipe::io {
namespace {

std::string utc_now_iso8601() {
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1'000'000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(us));
  return buf;
}

}  // namespace

std::string dead_letter_topic(std::string_view dlq_prefix, std::string_view original_topic) {
  std::string topic(dlq_prefix);
  for (char c : original_topic) topic.push_back(c == '/' ? '_' : c);
  return topic;
}

std::string dead_letter_body(std::string_view original_topic, stages::reason why, std::string_view payload,
                             std::string_view mqtt_properties) {
  std::string body = "{\"original_topic\":";
  stages::append_json_string(body, original_topic);
  body += ",\"failure_reason\":";
  stages::append_json_string(body, stages::reason_code(why));
  body += ",\"failure_timestamp\":";
  stages::append_json_string(body, utc_now_iso8601());
  body += ",\"payload\":";
  bool parsed = why != stages::reason::invalid_json && why != stages::reason::too_large;
  if (parsed) {
    body += payload;
  } else {
    stages::append_json_string(body, payload);
  }
  if (!mqtt_properties.empty()) {
    body += ",\"mqtt_properties\":";
    body += mqtt_properties;
  }
  body += "}";
  return body;
}

}  // namespace evpipe::io
