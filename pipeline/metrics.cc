// The metrics registry: probes, labelled families, readiness. The
// Prometheus text it renders is in metrics_render.cc.
#include "pipeline/metrics.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "stages/json_text.h"

namespace evpipe::pipeline {

std::string_view stage_name(stage s) noexcept {
  switch (s) {
    case stage::validate: return "validate";
    case stage::dedup: return "dedup";
    case stage::linger: return "linger";
    case stage::write: return "write";
    case stage::queue: return "queue";
    case stage::ack_post: return "ack_post";
    case stage::ack_write: return "ack_write";
    case stage::count_: break;
  }
  return "unknown";
}

std::string_view label_limiter::admit(std::string_view v) {
  if (seen_.contains(absl::string_view(v.data(), v.size()))) return v;
  if (seen_.size() >= max_) return "other";
  seen_.insert(std::string(v));
  return v;
}

void labelled_family::add(std::string_view a, std::string_view b, uint64_t n) {
  // A series that exists is its own labels' (admitted values stay admitted):
  // one lookup instead of three for the common case, a series seen before.
  std::string key;
  key.reserve(a.size() + 1 + b.size());
  key.append(a);
  key.push_back(label_sep);
  key.append(b);
  if (auto hit = counts.find(key); hit != counts.end()) {
    hit->second += n;
    return;
  }
  key.assign(first.admit(a));
  key.push_back(label_sep);
  key.append(second.admit(b));
  auto it = counts.find(key);
  if (it == counts.end() && counts.size() >= max_series) {
    key = "other";
    key.push_back(label_sep);
    key += "other";
    it = counts.find(key);
  }
  if (it == counts.end()) {
    counts.emplace(std::move(key), n);
  } else {
    it->second += n;
  }
}

metrics_registry::metrics_registry(std::string prefix, size_t max_label_values, size_t max_series)
    : prefix_(std::move(prefix)),
      // Reason codes are a fixed set, plus SQLSTATE-free db_rejected: 64 is plenty.
      ingested_(max_label_values, max_label_values, max_series),
      dead_lettered_(max_label_values, 64, max_series),
      // Tenants fold like topics: claims are free text, so the label is bounded too.
      tenant_ingested_(max_label_values, 1, max_series),
      tenant_dead_lettered_(max_label_values, 64, max_series),
      tenant_throttled_(max_label_values, 1, max_series) {}

shard_probe& metrics_registry::add_shard() {
  auto& p = *shards_.emplace_back(std::make_unique<shard_probe>());
  p.last_commit_unix_ms.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count());
  return p;
}

source_probe& metrics_registry::add_source(std::string kind, std::string address) {
  std::lock_guard lock(sources_mu_);
  auto& p = *sources_.emplace_back(std::make_unique<source_probe>());
  p.kind = std::move(kind);
  p.address = std::move(address);
  p.registry = this;
  return p;
}

source_probe* metrics_registry::find_source(std::string_view kind, std::string_view address) const {
  std::lock_guard lock(sources_mu_);
  for (const auto& p : sources_) {
    if (p->kind == kind && p->address == address) return p.get();
  }
  return nullptr;
}

void source_probe::note_tenant_throttled(std::string_view tenant) {
  bump(tenant_throttled);
  if (registry && !tenant.empty()) registry->add_throttled_by_tenant(tenant, 1);
}

void metrics_registry::merge(const absl::flat_hash_map<std::string, uint64_t>& in, labelled_family& into) {
  std::lock_guard lock(mu_);
  for (const auto& [k, n] : in) {
    if (n == 0) continue;
    auto sep = k.find(label_sep);
    std::string_view a = std::string_view(k).substr(0, sep);
    std::string_view b = sep == std::string::npos ? std::string_view{} : std::string_view(k).substr(sep + 1);
    into.add(a, b, n);
  }
}

void metrics_registry::add_ingested(const absl::flat_hash_map<std::string, uint64_t>& m) { merge(m, ingested_); }
void metrics_registry::add_dead_lettered(const absl::flat_hash_map<std::string, uint64_t>& m) {
  merge(m, dead_lettered_);
}

void metrics_registry::add_ingested_by_tenant(const absl::flat_hash_map<std::string, uint64_t>& m) {
  merge(m, tenant_ingested_);
}
void metrics_registry::add_dead_lettered_by_tenant(const absl::flat_hash_map<std::string, uint64_t>& m) {
  merge(m, tenant_dead_lettered_);
}
void metrics_registry::add_throttled_by_tenant(std::string_view tenant, uint64_t n) {
  std::lock_guard lock(mu_);
  tenant_throttled_.add(tenant, {}, n);
}

void metrics_registry::add_db_rejected(std::string_view sqlstate, uint64_t n) {
  std::lock_guard lock(mu_);
  db_rejected_[std::string(sqlstate)] += n;
}

void metrics_registry::add_dlq_duplicate(std::string_view reason, uint64_t n) {
  std::lock_guard lock(mu_);
  dlq_duplicates_[std::string(reason)] += n;
}

bool metrics_registry::all_shards_ready() const {
  for (const auto& s : shards_) {
    if (!s->db_ready.load(std::memory_order_relaxed)) return false;
  }
  return !shards_.empty();
}

namespace {

std::string iso8601_utc(int64_t unix_ms) {
  std::time_t t = unix_ms / 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(unix_ms % 1000));
  return buf;
}


}  // namespace

metrics_registry::readiness metrics_registry::ready_state(std::chrono::milliseconds max_stall) const {
  readiness r;
  std::string shards;
  int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now().time_since_epoch()).count();
  for (size_t i = 0; i < shards_.size(); ++i) {
    const auto& s = *shards_[i];
    int64_t started = s.write_started_ns.load();
    bool stalled = started != 0 && now - started > std::chrono::nanoseconds(max_stall).count();
    bool retrying = s.retrying.load();
    bool connected = s.db_ready.load();
    if (connected && !stalled && !retrying) continue;
    std::string error = s.last_error();
    // libpq errors carry their SQLSTATE first ("25006 cannot execute ...").
    std::string sqlstate;
    if (error.size() > 6 && error[5] == ' ' &&
        std::all_of(error.begin(), error.begin() + 5, [](char c) { return std::isdigit(c) || std::isupper(c); })) {
      sqlstate = error.substr(0, 5);
    }
    shards += shards.empty() ? "" : ",";
    shards += "{\"shard\":" + std::to_string(i) + ",\"state\":";
    stages::append_json_string(shards, !connected ? "database unreachable" : retrying ? "retrying a failed write" : "commit stalled");
    if (started != 0) {
      shards += ",\"since\":";
      stages::append_json_string(shards, iso8601_utc(s.write_started_unix_ms.load()));
      shards += ",\"stalled_ms\":" + std::to_string((now - started) / 1'000'000);
    }
    if (!sqlstate.empty()) {
      shards += ",\"sqlstate\":";
      stages::append_json_string(shards, sqlstate);
    }
    if (!error.empty() && (retrying || !connected)) {
      shards += ",\"error\":";
      stages::append_json_string(shards, error);
    }
    shards += "}";
  }
  // The fields of AutoCore's /health/mqtt-monitor (seed 004), per source.
  // messages_processed: events read; errors: protocol errors, refused
  // connections and 4xx answers (what the source itself could not take).
  r.source_health = "[";
  std::lock_guard sources_lock(sources_mu_);
  for (const auto& sp : sources_) {
    const auto& src = *sp;
    if (src.retired.load(std::memory_order_relaxed)) continue;
    if (r.source_health.size() > 1) r.source_health += ",";
    r.source_health += "{\"source\":";
    stages::append_json_string(r.source_health, src.kind);
    if (!src.address.empty()) {
      r.source_health += ",\"address\":";
      stages::append_json_string(r.source_health, src.address);
    }
    const int64_t active = src.connections_active.load();
    if (src.kind == "mqtt" || src.kind == "nats") {
      r.source_health += std::string(",\"broker_connected\":") + (active > 0 ? "true" : "false");
    }
    r.source_health += ",\"connections\":" + std::to_string(active) + ",\"last_message_time\":";
    const int64_t last = src.last_received_unix_ms.load(std::memory_order_relaxed);
    if (last == 0) {
      r.source_health += "null";
    } else {
      stages::append_json_string(r.source_health, iso8601_utc(last));
    }
    r.source_health += ",\"messages_processed\":" + std::to_string(src.received.load()) + ",\"errors\":" +
                       std::to_string(src.protocol_errors.load() + src.connections_refused.load() +
                                      src.http_client_errors.load()) +
                       "}";
  }
  r.source_health += "]";
  const std::string health = ",\"source_health\":" + r.source_health;
  if (shards_.empty()) {
    r.body = "{\"status\":\"not_ready\",\"reason\":\"no shards\"" + health + "}\n";
  } else if (shards.empty()) {
    r.ready = true;
    r.body = "{\"status\":\"ready\"" + health + "}\n";
  } else {
    r.body = "{\"status\":\"not_ready\",\"reason\":\"database\",\"shards\":[" + shards + "]" + health + "}\n";
  }
  return r;
}

}  // namespace evpipe::pipeline
