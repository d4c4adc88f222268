#include "io/sources/mqtt/mqtt_dead_letter.h"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace evpipe::io {
namespace {

void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

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

std::string dead_letter_body(std::string_view original_topic, stages::reason why, std::string_view payload) {
  std::string body = "{\"original_topic\":";
  append_json_string(body, original_topic);
  body += ",\"failure_reason\":";
  append_json_string(body, stages::reason_code(why));
  body += ",\"failure_timestamp\":";
  append_json_string(body, utc_now_iso8601());
  body += ",\"payload\":";
  bool parsed = why != stages::reason::invalid_json && why != stages::reason::too_large;
  if (parsed) {
    body += payload;
  } else {
    append_json_string(body, payload);
  }
  body += "}";
  return body;
}

}  // namespace evpipe::io
