// metrics_registry::render(): every probe as Prometheus text (exposition
// format 0.0.4), and the helpers that write it.
#include <algorithm>
#include <cstdio>
#include <string>

#include "io/postgres/partition_probe.h"
#include "pipeline/batch_trace.h"
#include "pipeline/metrics.h"
#include "stages/route/probe.h"

namespace evpipe::pipeline {

namespace {

void escape_label(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
}

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void sample(std::string& out, const std::string& name, const std::string& labels, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  out += name;
  if (!labels.empty()) out += "{" + labels + "}";
  out += " ";
  out += buf;
  out += "\n";
}

void render_histogram(std::string& out, const std::string& name, const std::string& labels,
                      const histogram::snapshot& s) {
  uint64_t cumulative = 0;
  std::string sep = labels.empty() ? "" : labels + ",";
  for (size_t i = 0; i < histogram::bounds_ns.size(); ++i) {
    cumulative += s.counts[i];
    char le[32];
    std::snprintf(le, sizeof le, "%g", histogram::bounds_ns[i] / 1e9);
    sample(out, name + "_bucket", sep + "le=\"" + le + "\"", double(cumulative));
  }
  cumulative += s.counts.back();
  sample(out, name + "_bucket", sep + "le=\"+Inf\"", double(cumulative));
  sample(out, name + "_sum", labels, s.sum_ns / 1e9);
  sample(out, name + "_count", labels, double(cumulative));
}

// A counter family labelled (topic, second), from a map keyed "topic\x1fsecond".
void render_pairs(std::string& out, const std::string& name, const char* help, const char* second,
                  const absl::flat_hash_map<std::string, uint64_t>& counts) {
  header(out, name, "counter", help);
  for (const auto& [k, n] : counts) {
    auto sep = k.find(label_sep);
    std::string labels = "topic=\"";
    escape_label(labels, std::string_view(k).substr(0, sep));
    labels += "\",";
    labels += second;
    labels += "=\"";
    escape_label(labels, std::string_view(k).substr(sep + 1));
    labels += "\"";
    sample(out, name, labels, double(n));
  }
}

// A family labelled by tenant alone (`second` null) or (tenant, second).
void render_tenants(std::string& out, const std::string& name, const char* help, const char* second,
                    const absl::flat_hash_map<std::string, uint64_t>& counts) {
  header(out, name, "counter", help);
  for (const auto& [k, n] : counts) {
    auto sep = k.find(label_sep);
    std::string labels = "tenant=\"";
    escape_label(labels, std::string_view(k).substr(0, sep));
    labels += "\"";
    if (second) {
      labels += ",";
      labels += second;
      labels += "=\"";
      escape_label(labels, std::string_view(k).substr(sep + 1));
      labels += "\"";
    }
    sample(out, name, labels, double(n));
  }
}

}  // namespace

std::string metrics_registry::render() const {
  std::lock_guard sources_lock(sources_mu_);  // a reload may add a source meanwhile
  std::string out;
  out.reserve(16 * 1024);
  const std::string& p = prefix_;
  auto sum_shards = [&](counter shard_probe::*field) {
    uint64_t t = 0;
    for (const auto& s : shards_) t += ((*s).*field).load(std::memory_order_relaxed);
    return t;
  };

  // The source kinds in the order their first probe was added: each kind's
  // series sums its sources' probes (one per configured source).
  std::vector<std::string_view> kinds;
  for (const auto& s : sources_) {
    if (std::find(kinds.begin(), kinds.end(), s->kind) == kinds.end()) kinds.push_back(s->kind);
  }
  auto sum_kind = [&](std::string_view kind, auto value) {
    double t = 0;
    for (const auto& s : sources_) {
      if (s->kind == kind) t += value(*s);
    }
    return t;
  };

  std::string name = p + "_events_received_total";
  header(out, name, "counter", "Events read by sources.");
  for (auto kind : kinds) {
    sample(out, name, "source=\"" + std::string(kind) + "\"",
           sum_kind(kind, [](const source_probe& s) { return double(s.received.load()); }));
  }

  {
    std::lock_guard lock(mu_);
    render_pairs(out, p + "_ingest_total", "Events committed to events_mirror, by topic and kind.", "kind", ingested_.counts);
    render_pairs(out, p + "_dlq_total", "Dead letters committed as new rows of dlq_events, by topic and reason (resends: _dlq_duplicates_total).", "reason",
                 dead_lettered_.counts);
    name = p + "_db_rejected_total";
    header(out, name, "counter", "Rows PostgreSQL refused (dead-lettered as db_rejected), by SQLSTATE.");
    for (const auto& [state, n] : db_rejected_) sample(out, name, "sqlstate=\"" + state + "\"", double(n));
    name = p + "_dlq_duplicates_total";
    header(out, name, "counter",
           "Dead letters dlq_events already held (the same bad event resent), by reason: acked, no new row.");
    for (const auto& [reason, n] : dlq_duplicates_) sample(out, name, "reason=\"" + reason + "\"", double(n));
    // By tenant (docs/tenants.md): only events that have one; no series while tenancy is off.
    render_tenants(out, p + "_ingest_by_tenant_total", "Events committed, by tenant (the rest of max_label_values tenants fold into \"other\").",
                   nullptr, tenant_ingested_.counts);
    render_tenants(out, p + "_dlq_by_tenant_total", "Dead letters committed as new rows of dlq_events, by tenant and reason.",
                   "reason", tenant_dead_lettered_.counts);
    render_tenants(out, p + "_throttled_by_tenant_total",
                   "Connection pauses and HTTP 429s because the tenant was over its quota, by tenant.", nullptr,
                   tenant_throttled_.counts);
  }

  // Per route (stages/route/probe.h): names come from the config.
  if (auto routes = stages::route::route_probe::instance().snapshot(); !routes.empty()) {
    struct route_family {
      const char* suffix;
      const char* help;
      uint64_t stages::route::route_probe::row::*field;
    };
    static constexpr route_family route_families[] = {
        {"_route_rows_appended_total", "Rows an append route wrote to its table (committed).",
         &stages::route::route_probe::row::appended},
        {"_route_rows_upserted_total", "Rows an upsert route inserted or updated (committed).",
         &stages::route::route_probe::row::upserted},
        {"_route_skipped_older_total",
         "Upsert messages that changed nothing: not newer than the stored row or than another message of their batch.",
         &stages::route::route_probe::row::skipped_older},
        {"_route_mismatch_total", "Messages a route dead-lettered as route_mismatch (each delivery).",
         &stages::route::route_probe::row::mismatched},
    };
    for (const auto& f : route_families) {
      name = p + f.suffix;
      header(out, name, "counter", f.help);
      for (const auto& r : routes) {
        std::string labels = "route=\"";
        escape_label(labels, r.route);
        labels += '"';
        sample(out, name, labels, double(r.*f.field));
      }
    }
    auto& probe = stages::route::route_probe::instance();
    name = p + "_route_keys_pruned_total";
    header(out, name, "counter", "evpipe_route_keys rows deleted as older than [route_keys] retention_s.");
    sample(out, name, "", double(probe.keys_pruned.load(std::memory_order_relaxed)));
    name = p + "_route_keys_prune_errors_total";
    header(out, name, "counter", "Rounds of evpipe_route_keys pruning that failed (then retried).");
    sample(out, name, "", double(probe.keys_prune_errors.load(std::memory_order_relaxed)));
  }

  {
    // Partition maintenance ([storage] partition, docs/partitions.md), by table.
    using io::partition_counters;
    const std::pair<const char*, std::pair<const char*, std::atomic<uint64_t> partition_counters::*>> families[] = {
        {"_partitions_created_total", {"Partitions created ahead of time, or for rows found in the DEFAULT partition.", &partition_counters::created}},
        {"_partitions_dropped_total", {"Partitions dropped as past [storage] retention.", &partition_counters::dropped}},
        {"_partition_rows_dropped_total", {"Rows in the partitions (and DEFAULT-partition rows) dropped as past [storage] retention.", &partition_counters::rows_dropped}},
        {"_partition_rows_moved_total", {"Rows moved from the DEFAULT partition into a partition created for them.", &partition_counters::rows_moved}},
        {"_partition_keys_pruned_total", {"evpipe_mirror_keys and evpipe_dlq_keys rows pruned (older than every row of their table).", &partition_counters::keys_pruned}},
        {"_partition_maintenance_errors_total", {"Partition maintenance rounds that failed (a lock not granted in time, ...), then retried.", &partition_counters::errors}},
    };
    for (const auto& family : families) {
      // (a named pair, not a structured binding: clang 14 cannot capture one in the lambda)
      const auto counter = family.second.second;
      name = p + family.first;
      header(out, name, "counter", family.second.first);
      io::partition_probe::instance().each([&](const std::string& table, const partition_counters& c) {
        sample(out, name, "table=\"" + table + "\"", double((c.*counter).load(std::memory_order_relaxed)));
      });
    }
  }

  struct shard_counter {
    const char* suffix;
    const char* help;
    counter shard_probe::*field;
    bool per_shard;  // one series per shard (label shard): what `evpipe top` and the alerts look at per shard
  };
  static constexpr shard_counter shard_counters[] = {
      {"_duplicates_total", "Events dropped as duplicates of a committed idempotency key.", &shard_probe::duplicates,
       false},
      {"_batches_total", "Batches committed, by shard.", &shard_probe::batches, true},
      {"_copy_rows_total", "Rows sent with COPY, by shard.", &shard_probe::copy_rows, true},
      {"_copy_bytes_total", "Bytes sent with COPY.", &shard_probe::copy_bytes, false},
      {"_db_errors_total", "Database operations that failed.", &shard_probe::db_errors, false},
      {"_db_retries_total", "Batch writes retried after a database error, by shard.", &shard_probe::db_retries, true},
  };
  for (const auto& c : shard_counters) {
    name = p + c.suffix;
    header(out, name, "counter", c.help);
    if (!c.per_shard) {
      sample(out, name, "", double(sum_shards(c.field)));
      continue;
    }
    for (size_t i = 0; i < shards_.size(); ++i) {
      sample(out, name, "shard=\"" + std::to_string(i) + "\"", double(((*shards_[i]).*c.field).load(std::memory_order_relaxed)));
    }
  }

  name = p + "_shard_last_commit_timestamp_seconds";
  header(out, name, "gauge", "When a shard last committed a batch (Unix time; the start time before the first).");
  for (size_t i = 0; i < shards_.size(); ++i) {
    sample(out, name, "shard=\"" + std::to_string(i) + "\"", double(shards_[i]->last_commit_unix_ms.load()) / 1000);
  }

  // What /health/ready asks of each shard's database, for an alert that
  // fires while evpipe is idle too (no write fails then, so no error counts).
  name = p + "_db_ready";
  header(out, name, "gauge", "1 while a shard's database connection is usable, else 0 (checked every second when idle).");
  for (size_t i = 0; i < shards_.size(); ++i) {
    sample(out, name, "shard=\"" + std::to_string(i) + "\"", shards_[i]->db_ready.load() ? 1.0 : 0.0);
  }

  name = p + "_queue_depth";
  header(out, name, "gauge", "Events queued for a shard.");
  for (size_t i = 0; i < shards_.size(); ++i) {
    sample(out, name, "shard=\"" + std::to_string(i) + "\"", double(shards_[i]->queue_depth.load()));
  }
  if (leases_) {
    name = p + "_shard_connections";
    header(out, name, "gauge", "Open connections pinned to a shard (sources with route_by = \"connection\").");
    for (size_t i = 0; i < leases_->size(); ++i) {
      sample(out, name, "shard=\"" + std::to_string(i) + "\"", double((*leases_)[i].load(std::memory_order_relaxed)));
    }
  }
  struct source_metric {
    const char* suffix;
    const char* type;
    const char* help;
    double (*value)(const source_probe&);
  };
  static constexpr source_metric source_metrics[] = {
      {"_unacked_events", "gauge", "Events read from a source whose outcome is not yet acknowledged.",
       [](const source_probe& s) { return double(s.unacked.load()); }},
      {"_backpressure_waits_total", "counter",
       "Times a source connection paused reading because a shard queue was full or too much was unacked.",
       [](const source_probe& s) { return double(s.backpressure_waits.load()); }},
      {"_backpressure_paused_seconds_total", "counter",
       "Seconds source connections spent paused by backpressure, summed over the connections.",
       [](const source_probe& s) { return double(s.backpressure_paused_ns.load()) / 1e9; }},
      {"_tenant_throttled_total", "counter",
       "Times a source connection paused, or an HTTP request got 429, because its tenant was over its quota.",
       [](const source_probe& s) { return double(s.tenant_throttled.load()); }},
      {"_connections_refused_total", "counter",
       "Connections closed at once because the source was at its connection limit.",
       [](const source_probe& s) { return double(s.connections_refused.load()); }},
      {"_connections_timed_out_total", "counter", "Connections closed by the idle timeout.",
       [](const source_probe& s) { return double(s.connections_timed_out.load()); }},
      {"_connections_active", "gauge", "Open source connections.",
       [](const source_probe& s) { return double(s.connections_active.load()); }},
  };
  for (const auto& m : source_metrics) {
    name = p + m.suffix;
    header(out, name, m.type, m.help);
    for (auto kind : kinds) sample(out, name, "source=\"" + std::string(kind) + "\"", sum_kind(kind, m.value));
  }
  // Metrics of one source kind, unlabelled (names as the dashboards know them).
  struct kind_metric {
    const char* kind;
    const char* suffix;
    const char* type;
    const char* help;
    double (*value)(const source_probe&);
  };
  static constexpr kind_metric kind_metrics[] = {
      {"mqtt", "_mqtt_connections_active", "gauge", "MQTT sessions connected to the broker.",
       [](const source_probe& s) { return double(s.connections_active.load()); }},
      {"mqtt", "_mqtt_reconnects_total", "counter", "MQTT sessions re-established after a lost connection.",
       [](const source_probe& s) { return double(s.reconnects.load()); }},
      {"mqtt", "_mqtt_pubacks_total", "counter", "PUBACKs sent, each after its message's outcome committed.",
       [](const source_probe& s) { return double(s.pubacks.load()); }},
      {"mqtt", "_mqtt_dlq_published_total", "counter", "Dead letters republished to the broker.",
       [](const source_probe& s) { return double(s.dlq_published.load()); }},
      {"mqtt", "_mqtt_dlq_echoes_ignored_total", "counter",
       "Own dead-letter republishes received back on a subscribed filter: acknowledged, not stored again.",
       [](const source_probe& s) { return double(s.dlq_echoes_ignored.load()); }},
      {"mqtt", "_mqtt_protocol_errors_total", "counter", "Connections dropped because the broker broke the protocol.",
       [](const source_probe& s) { return double(s.protocol_errors.load()); }},
      {"mqtt", "_mqtt_session_takeovers_total", "counter",
       "Sessions the broker closed within seconds of CONNACK: most likely another client with the same client id.",
       [](const source_probe& s) { return double(s.session_takeovers.load()); }},
      {"mqtt", "_mqtt_session_lost_total", "counter",
       "Reconnects where the broker no longer had evpipe's persistent session (its queued messages are gone).",
       [](const source_probe& s) { return double(s.session_lost.load()); }},
      {"mqtt", "_mqtt_sessions_subscribed", "gauge",
       "MQTT sessions whose subscription the broker confirmed (SUBACK). A connected session that is not yet "
       "subscribed receives only what its persistent session had queued: a new session nothing.",
       [](const source_probe& s) { return double(s.sessions_subscribed.load()); }},
      {"mqtt", "_mqtt_subscriptions_degraded", "gauge",
       "Topic filters the broker refused (SUBACK 0x80) or granted only at QoS 0, per the latest SUBACKs.",
       [](const source_probe& s) { return double(s.subscriptions_degraded.load()); }},
      {"mqtt", "_mqtt_shared_subscription_unconfirmed", "gauge",
       "MQTT sessions with shared_group whose probe did not come back through the $share filter: the broker most "
       "likely binds it literally and delivers nothing to it.",
       [](const source_probe& s) { return double(s.shared_unconfirmed.load()); }},
      {"nats", "_nats_connections_active", "gauge", "NATS sources connected to a server.",
       [](const source_probe& s) { return double(s.connections_active.load()); }},
      {"nats", "_nats_consumers_ready", "gauge", "JetStream pull consumers bound and pulling.",
       [](const source_probe& s) { return double(s.nats_consumers_ready.load()); }},
      {"nats", "_nats_reconnects_total", "counter", "Reconnections to a NATS server after a lost connection.",
       [](const source_probe& s) { return double(s.reconnects.load()); }},
      {"nats", "_nats_acks_total", "counter", "JetStream messages acked, each after its outcome committed.",
       [](const source_probe& s) { return double(s.nats_acks.load()); }},
      {"nats", "_nats_in_progress_acks_total", "counter",
       "In-progress acks sent for messages whose commit takes long (a database outage), so that the server's ack "
       "wait does not redeliver them.",
       [](const source_probe& s) { return double(s.nats_in_progress.load()); }},
      {"nats", "_nats_max_deliveries_total", "counter",
       "Messages delivered more than max_deliveries times, dead-lettered without being processed.",
       [](const source_probe& s) { return double(s.nats_max_deliveries.load()); }},
      {"nats", "_nats_fetch_errors_total", "counter", "Pulls from a JetStream consumer that failed (not timeouts).",
       [](const source_probe& s) { return double(s.nats_fetch_errors.load()); }},
  };
  for (const auto& m : kind_metrics) {
    if (std::find(kinds.begin(), kinds.end(), m.kind) == kinds.end()) continue;
    name = p + m.suffix;
    header(out, name, m.type, m.help);
    sample(out, name, "", sum_kind(m.kind, m.value));
  }
  if (std::find(kinds.begin(), kinds.end(), "http") != kinds.end()) {
    name = p + "_http_responses_total";
    header(out, name, "counter", "Responses of the HTTP source to POST /v1/events, by status class.");
    sample(out, name, "code=\"200\"", sum_kind("http", [](const source_probe& s) { return double(s.http_ok.load()); }));
    sample(out, name, "code=\"4xx\"",
           sum_kind("http", [](const source_probe& s) { return double(s.http_client_errors.load()); }));
    sample(out, name, "code=\"503\"", sum_kind("http", [](const source_probe& s) { return double(s.http_busy.load()); }));
  }

  name = p + "_event_latency_seconds";
  header(out, name, "histogram", "Time from an event's receipt to the commit of its outcome.");
  histogram::snapshot total;
  for (const auto& s : shards_) total.add(s->event_latency.read());
  render_histogram(out, name, "", total);

  name = p + "_stage_latency_seconds";
  header(out, name, "histogram", "Time one batch spends in a stage (the shards' stages by shard).");
  for (size_t st = 0; st < static_cast<size_t>(stage::count_); ++st) {
    const std::string stage_label = "stage=\"" + std::string(stage_name(static_cast<stage>(st))) + "\"";
    if (static_cast<stage>(st) == stage::validate || static_cast<stage>(st) == stage::ack_write) {
      histogram::snapshot snap;  // the sources' stages: one series
      for (const auto& s : sources_) {
        snap.add(static_cast<stage>(st) == stage::validate ? s->validate_latency.read() : s->ack_write_latency.read());
      }
      render_histogram(out, name, stage_label, snap);
      continue;
    }
    for (size_t i = 0; i < shards_.size(); ++i) {
      histogram::snapshot snap;
      snap.add(shards_[i]->stage_latency[st].read());
      render_histogram(out, name, stage_label + ",shard=\"" + std::to_string(i) + "\"", snap);
    }
  }

  const auto& traces = trace_totals();  // pipeline/batch_trace.h, docs/operations.md "Hiccups"
  name = p + "_slow_batches_total";
  header(out, name, "counter", "Batches slower than [pipeline] slow_batch_ms from read to ack (each traced in the log).");
  sample(out, name, "", double(traces.slow_batches.load()));
  name = p + "_io_stalls_total";
  header(out, name, "counter", "I/O thread timers that fired later than [pipeline] slow_batch_ms (the threads were stalled).");
  sample(out, name, "", double(traces.io_stalls.load()));
  name = p + "_io_stall_seconds_total";
  header(out, name, "counter", "How late those timers fired, summed.");
  sample(out, name, "", double(traces.io_stall_ns.load()) / 1e9);

  name = p + "_config_reloads_total";
  header(out, name, "counter", "Config reloads (SIGHUP) by result: success (applied), failure (kept the running config).");
  sample(out, name, "result=\"success\"", double(reloads.succeeded.load()));
  sample(out, name, "result=\"failure\"", double(reloads.failed.load()));
  name = p + "_config_last_reload_timestamp_seconds";
  header(out, name, "gauge", "When the last config reload ended (Unix time; 0 before the first).");
  sample(out, name, "", reloads.last_timestamp.load());
  name = p + "_config_last_reload_successful";
  header(out, name, "gauge", "Whether the last config reload succeeded (1 before the first).");
  sample(out, name, "", reloads.last_succeeded.load() ? 1.0 : 0.0);
  return out;
}

void render_histogram_family(std::string& out, const std::string& name, const std::string& help,
                             const histogram::snapshot& s) {
  header(out, name, "histogram", help.c_str());
  render_histogram(out, name, "", s);
}

}  // namespace evpipe::pipeline
