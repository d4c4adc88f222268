#include "load/event_generator.h"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace evpipe::load {

namespace {
const std::vector<std::string> kinds = {"project_created", "project_updated", "task_completed", "login_success",
                                        "telemetry"};

std::string uuid_from(uint64_t a, uint64_t b) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
                static_cast<unsigned>(0x8000 | (b >> 48 & 0x3fff)),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

std::string now_iso() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}
}  // namespace

const std::vector<std::string>& event_generator::topics() {
  static const std::vector<std::string> t = {"tracker/events/projects/created", "tracker/events/tasks/completed",
                                             "tracker/events/auth/login_success", "autocore/ESP32_001/telemetry",
                                             "autocore/ESP32_002/telemetry"};
  return t;
}

event_generator::event_generator(generator_options opts) : opts_(std::move(opts)), rng_(opts_.seed * 1000003 + opts_.stream) {}

void event_generator::valid_event(std::string& out, uint64_t n, const std::string& topic) {
  // The key and trace id depend only on (run, stream, n): a resend is
  // byte-identical in its identity fields.
  std::mt19937_64 id_rng(opts_.seed ^ (n * 0x9E3779B97F4A7C15ULL) ^ (uint64_t{opts_.stream} << 48));
  const std::string& kind = kinds[n % kinds.size()];
  size_t start = out.size();
  out += "{\"trace_id\":\"" + uuid_from(id_rng(), id_rng()) + "\",\"ts\":\"" + now_iso() + "\",\"kind\":\"" + kind +
         "\",\"idempotency_key\":\"" + opts_.run_id + "-" + std::to_string(opts_.stream) + "-" + std::to_string(n) +
         "\",\"topic\":\"" + topic + "\",\"payload\":{\"seq\":" + std::to_string(n) +
         ",\"status\":\"active\",\"value\":" + std::to_string(id_rng() % 100000) + ",\"note\":\"";
  size_t used = out.size() - start + 3;  // closing "}}
  if (used < opts_.payload_bytes) {
    size_t pad = opts_.payload_bytes - used;
    if (filler_.size() < pad) {
      filler_.clear();
      for (size_t i = 0; filler_.size() < pad + 64; ++i) filler_ += "lorem ipsum dolor sit amet ";
    }
    out.append(filler_, 0, pad);
  }
  out += "\"}}";
}

void event_generator::invalid_event(std::string& out, uint64_t n) {
  // One of each reason in turn; too_large only when the server's limit is
  // given (at evpipe's default that is a 1 MiB line).
  std::string key = opts_.run_id + "-" + std::to_string(opts_.stream) + "-bad-" + std::to_string(n);
  std::string id = uuid_from(rng_(), rng_());
  if (opts_.too_large_bytes > 0 && n % 9 == 8) {
    size_t start = out.size();
    out += "{\"trace_id\":\"" + id + "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"" + key +
           "\",\"payload\":{\"big\":\"";
    size_t used = out.size() - start + 3;
    if (used <= opts_.too_large_bytes) out.append(opts_.too_large_bytes + 1 - used, 'x');
    out += "\"}}";
    return;
  }
  switch (n % 8) {
    case 0: out += "{\"trace_id\":\"" + id + "\",\"ts\": garbage " + key + "}"; break;  // invalid_json
    case 1: out += "{\"trace_id\":\"" + id + "\",\"kind\":\"k\",\"idempotency_key\":\"" + key + "\",\"payload\":{}}"; break;
    case 2: out += "{\"trace_id\":\"not-a-uuid\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"" + key + "\",\"payload\":{}}"; break;
    case 3: out += "{\"trace_id\":\"" + id + "\",\"ts\":\"2025-13-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"" + key + "\",\"payload\":{}}"; break;
    case 4: out += "{\"trace_id\":\"" + id + "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"\",\"idempotency_key\":\"" + key + "\",\"payload\":{}}"; break;
    case 5: out += "{\"trace_id\":\"" + id + "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"\",\"payload\":{\"k\":\"" + key + "\"}}"; break;
    case 6: out += "{\"trace_id\":\"" + id + "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"" + key + "\",\"payload\":{},\"topic\":7}"; break;
    default: out += "{\"trace_id\":\"" + id + "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"" + key + "\",\"payload\":[1]}"; break;
  }
}

event_class event_generator::next(std::string& out) {
  uint64_t n = seq_++;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double r = u(rng_);
  if (r < opts_.invalid_frac) {
    invalid_event(out, invalid_++);
    return event_class::invalid;
  }
  if (r < opts_.invalid_frac + opts_.dup_frac && !recent_.empty()) {
    uint64_t again = recent_[rng_() % recent_.size()];
    valid_event(out, again, topics()[again % topics().size()]);
    ++dups_;
    return event_class::duplicate;
  }
  uint64_t id = valid_++;
  valid_event(out, id, topics()[id % topics().size()]);
  if (opts_.dup_frac > 0) {
    if (recent_.size() < 4096) {
      recent_.push_back(id);
    } else {
      recent_[rng_() % recent_.size()] = id;
    }
  }
  (void)n;
  return event_class::valid;
}

}  // namespace evpipe::load
