#pragma once
// evpipe's configuration: parsed once from TOML into this immutable struct.
// Every field has a default, a bound and a one-line doc; config/evpipe.toml
// lists them all. Loading throws config_error with the file, the key and the
// problem; that is the only place exceptions are used on purpose.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/nats_section.h"
#include "config/route_config.h"
#include "config/storage_section.h"
#include "config/stream_section.h"
#include "config/schemas_section.h"
#include "config/tenants_section.h"

namespace evpipe::config {

struct endpoint {
  std::string host;
  uint16_t port = 0;
  [[nodiscard]] std::string str() const;
  bool operator==(const endpoint&) const = default;
};

struct tcp_source {
  endpoint listen;                    // where NDJSON producers connect
  std::string topic = "evpipe/tcp";   // topic of events without a `topic` field
  uint32_t max_unacked = 65536;       // per connection: stop reading past this many unacked lines
  uint32_t max_connections = 1024;    // further connections are closed at once
  uint32_t idle_timeout_s = 300;      // close after this long reading without a complete line (0: never)
  std::string route_by = "key";       // "key": each event to its key's shard; "connection": all of a
                                      // connection's events to one shard (docs/operations.md)
  bool selective_acks = true;         // acks also name lines done beyond the cumulative count
                                      // ({"ack":N,"sack":[[a,b],...]}: docs/operations.md, "Acks")
  source_tenancy tenancy;             // tenant, allowed_tenants (docs/tenants.md)
  bool operator==(const tcp_source&) const = default;  // a reload restarts a source only when it changed
};

// "evpipe-<host name>": the client id of an MQTT source that sets none.
std::string default_mqtt_client_id();

// One MQTT broker to subscribe to ([[sources.mqtt]]). Messages are received
// at QoS 1 on a persistent session and acknowledged (PUBACK) only once their
// outcome is committed.
struct mqtt_source {
  std::string url;                    // "mqtt://host:port" or "mqtts://host:port"
  endpoint broker;                    // parsed from url
  bool tls = false;                   // mqtts://
  std::string ca_file;                // mqtts: CA bundle to verify the broker ("" = system default)
  std::string cert_file;              // mqtts: client certificate (optional, with key_file)
  std::string key_file;               // mqtts: client private key
  std::string client_id;              // stable, so the broker keeps the session (suffixed -N when connections > 1);
                                      // "" = default_mqtt_client_id(), "evpipe-<host name>"
  std::string username;               // "" = none
  std::string password_file;          // file holding the password (first line); never logged
  std::string password;               // read from password_file at load; never printed
  std::vector<std::string> topics;    // topic filters, '+' and '#' allowed
  uint32_t qos = 1;                   // 1 = at least once (acked after commit); 2 = QoS 2 handshake; 0 = at most once
  uint32_t keepalive_s = 30;          // MQTT keep alive; PINGREQ when idle
  uint32_t connections = 1;           // sessions to the broker (> 1 needs shared_group)
  std::string shared_group;           // subscribe as $share/<group>/<filter> ("" = plain subscriptions)
  uint32_t max_inflight = 16384;      // per connection: stop reading past this many unacked messages
  uint32_t base_ms = 100;             // first reconnect delay
  uint32_t max_ms = 10'000;           // reconnect delay cap
  uint32_t jitter_pct = 20;           // reconnect delays vary by up to this percentage
  bool dlq_publish = false;           // republish dead letters to <dlq_prefix><topic with / as _>
  std::string dlq_prefix = "tracker/dlq/";
  std::string protocol = "3.1.1";     // "3.1.1" or "5" (MQTT 5: Receive Maximum, session expiry, reason codes)
  uint32_t session_expiry_s = 4294967295u;  // MQTT 5: how long the broker keeps the session while evpipe is away
                                            // (4294967295 = never, like a 3.1.1 persistent session)
  source_tenancy tenancy;             // tenant, tenant_topic, allowed_tenants (docs/tenants.md)
  bool operator==(const mqtt_source&) const = default;
};

// One HTTP listener accepting POST /v1/events ([[sources.http]]).
struct http_source {
  endpoint listen;
  std::string topic = "evpipe/http";  // topic when neither X-Topic nor the event's `topic` field gives one
  uint32_t max_body_bytes = 8u << 20; // larger requests get 413
  uint32_t max_header_bytes = 16384;  // larger request headers get 431
  std::string bearer_token_file;      // "" = no authentication; else file holding the token
  std::string bearer_token;           // read from bearer_token_file at load; never printed
  uint32_t max_connections = 1024;    // further connections are closed at once
  uint32_t idle_timeout_s = 60;       // close a keep-alive connection idle this long
  std::vector<std::string> cors_allow_origins;  // web pages that may post ("https://host[:port]" or "*"); [] = none
  std::string route_by = "key";       // "key" or "connection", as for tcp_source
  source_tenancy tenancy;             // tokens_file, tenant, allowed_tenants (docs/tenants.md)
  bool operator==(const http_source&) const = default;
};

struct settings {
  struct {
    uint32_t shards = 0;              // 0 = one per core
    uint32_t queue_capacity = 16384;  // events queued per shard before sources pause (docs/operations.md, "Memory")
    uint32_t io_threads = 1;          // threads running the sources
    uint32_t shutdown_timeout_ms = 30'000;  // on SIGTERM, how long to wait for pending commits
    uint32_t slow_batch_ms = 50;      // log a batch's timeline when read to ack takes longer, and count I/O
                                      // thread stalls this long (0: off; docs/operations.md, "Hiccups")
  } pipeline;
  struct {
    uint32_t max_rows = 16384;        // flush a batch at this many events
    uint32_t max_bytes = 16 << 20;    // ... or this many encoded bytes
    uint32_t linger_ms = 0;           // ... or this long after its first event (0: as soon as the queue is empty)
  } batch;
  struct {
    uint32_t window_keys = 1'000'000; // recent keys remembered per shard
  } dedup;
  struct {
    uint32_t max_event_bytes = 1 << 20;  // larger events are dead-lettered as too_large
    uint32_t max_key_bytes = 255;        // longest idempotency_key
    uint32_t max_depth = 64;             // deepest JSON nesting
  } events;
  struct {
    std::string dsn;  // libpq connection string or URI; "" = libpq's defaults and PG* environment
    uint32_t retry_base_ms = 100;     // first reconnect delay
    uint32_t retry_max_ms = 5000;     // reconnect delay cap
    uint32_t max_attempts = 0;        // per batch, then its events are dead-lettered as retries_exhausted (0: forever)
    std::string schema;               // schema of evpipe's tables; "" = the connection's search_path
    std::string startup = "wait";     // database unreachable at start: "wait" for it, or "fail" (exit 1)
  } postgres;
  struct {
    std::string listen = "127.0.0.1:9464";  // metrics and health; "" disables
    uint32_t max_connections = 64;          // further connections are closed at once
    uint32_t idle_timeout_s = 10;           // a request's headers, or the next keep-alive request, within this
  } http;
  struct {
    uint32_t max_commit_stall_ms = 2000;  // /health/ready is 503 while a batch write takes longer (or is retried)
  } health;
  struct {
    std::string prefix = "evpipe";    // metric name prefix ("taylor" for TaylorDash dashboards)
    uint32_t max_label_values = 500;  // distinct values per label of one family before folding into "other"
    uint32_t max_series = 2000;       // series per labelled family (topic x kind, topic x reason), then (other, other)
  } metrics;
  struct {
    std::string level = "info";       // trace, debug, info, warn, error
    std::string format = "text";      // text, or json: one object per line (time, level, message)
  } log;
  stream_section stream;              // [stream]: the live stream of committed events (docs/read.md)
  schemas_section schemas;            // [schemas]: payload JSON Schemas per kind (docs/schemas.md)
  storage_section storage;            // [storage]: partitioned tables and retention (docs/partitions.md)
  tenants_section tenants;            // [tenants]: where events' tenants come from, quotas (docs/tenants.md)
  std::vector<tcp_source> tcp_sources;
  std::vector<mqtt_source> mqtt_sources;
  std::vector<http_source> http_sources;
  std::vector<nats_source> nats_sources;  // [[sources.nats]] (config/nats_section.h, docs/nats.md)
  std::vector<route> routes;          // [[routes]]: messages into typed tables (docs/routes.md), in match order
  struct {
    uint32_t retention_s = 604'800;   // evpipe_route_keys rows kept this long (7 days): a redelivery within it stores nothing; 0 = never pruned
    uint32_t prune_batch = 1000;      // keys deleted per statement
    uint32_t prune_interval_ms = 60'000;  // pause between pruning rounds once no old key is left
  } route_keys;

  // shards with 0 resolved to the number of cores.
  [[nodiscard]] uint32_t effective_shards() const;
};

class config_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Loads and validates a TOML file; throws config_error.
[[nodiscard]] settings load_file(const std::string& path);
// Same, from text (`origin` names it in messages).
[[nodiscard]] settings load_string(std::string_view toml_text, const std::string& origin = "config");

// The effective configuration as TOML, with secrets (DSN passwords) masked.
[[nodiscard]] std::string to_toml(const settings& s);

// "host:port", "[v6]:port"; throws config_error naming `what`.
[[nodiscard]] endpoint parse_endpoint(std::string_view text, const std::string& what);

// A listen address: parse_endpoint, and the host must be an IP address.
[[nodiscard]] endpoint parse_listen(std::string_view text, const std::string& what);

// What `run` would refuse in a configuration that loads: no source at all, a
// TLS file that cannot be read. `check-config` reports the same, so that what
// it accepts, `run` runs. Empty when there is nothing to say.
[[nodiscard]] std::vector<std::string> problems_for_run(const settings& s);

// The DSN with any password replaced by "****", for logs and check-config.
[[nodiscard]] std::string mask_dsn(const std::string& dsn);

}  // namespace evpipe::config
