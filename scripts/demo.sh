#!/usr/bin/env bash
# evpipe in 15 seconds: installs missing Debian packages, builds Release,
# starts a private PostgreSQL and Mosquitto on loopback in a scratch
# directory, migrates, runs evpipe, sends it a stream of events (valid,
# invalid, duplicates) over TCP for about 15 s, then 2000 over MQTT, prints
# events/s, latency percentiles and the row counts of both tables, then stops
# everything it started. Then a short AutoCore part: simulated devices publish
# status, telemetry and relay messages; their routed tables are printed.
#   DEMO_RATE=20000 DEMO_SECONDS=15 scripts/demo.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
rate="${DEMO_RATE:-20000}"
seconds="${DEMO_SECONDS:-15}"

ensure_packages
build_evpipe Release
bin="$EVPIPE_BUILD_DIR"

scratch_cluster
writeback_apply  # as root: steady kernel writeback, restored on exit (scripts/lib.sh)
mosquitto_start "$scratch/mqtt"

tcp_port="$(free_port)"
http_port="$(free_port)"
cat >"$scratch/evpipe.toml" <<CONF
[postgres]
dsn = "$EVPIPE_DSN"
[http]
listen = "127.0.0.1:$http_port"
[[sources.tcp]]
listen = "127.0.0.1:$tcp_port"
topic = "tracker/events/demo"
[[sources.mqtt]]
url = "mqtt://127.0.0.1:$MQTT_PORT"
client_id = "evpipe-demo"
topics = ["tracker/events/#", "autocore/+/telemetry"]
CONF

"$bin/app/evpipe" migrate --config "$scratch/evpipe.toml"
"$bin/app/evpipe" run --config "$scratch/evpipe.toml" 2>"$scratch/evpipe.log" &
evpipe_pid=$!
for _ in $(seq 100); do
  http_get "$http_port" /health/ready >/dev/null && break
  kill -0 "$evpipe_pid" 2>/dev/null || { cat "$scratch/evpipe.log" >&2; die "evpipe did not start"; }
  sleep 0.1
done

log "sending events at $rate/s for $seconds s (1% invalid, 2% resent keys) to 127.0.0.1:$tcp_port"
"$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --rate "$rate" --duration "$seconds" \
  --connections 4 --invalid-frac 0.01 --dup-frac 0.02 --warmup 1

log "publishing 2000 events over MQTT (QoS 1) to tracker/events/demo/mqtt"
"$bin/load/evpipe-load" --emit "$scratch/mqtt.ndjson" --count 2000 --run-id mqtt-demo --invalid-frac 0.01 >/dev/null
"$bin/load/evpipe-load" --target "mqtt://127.0.0.1:$MQTT_PORT" --topic tracker/events/demo/mqtt \
  --input "$scratch/mqtt.ndjson" --quiet | grep -E '^ +(sent|acked)'   # acked = PUBACKs of the broker
for _ in $(seq 100); do
  n="$(psql -X -Atq -d "$EVPIPE_DSN" -c "SELECT (SELECT count(*) FROM events_mirror WHERE topic = 'tracker/events/demo/mqtt') + (SELECT count(*) FROM dlq_events WHERE original_topic = 'tracker/events/demo/mqtt')")"
  [ "$n" -ge 2000 ] && break
  sleep 0.1
done
echo "MQTT ingest (every message PUBACKed by evpipe only after its row committed):"
psql -X -q -d "$EVPIPE_DSN" -c "SELECT 'events_mirror' AS table, count(*) FROM events_mirror WHERE topic = 'tracker/events/demo/mqtt' UNION ALL SELECT 'dlq_events', count(*) FROM dlq_events WHERE original_topic = 'tracker/events/demo/mqtt'"

echo
echo "rows in PostgreSQL:"
psql -X -q -d "$EVPIPE_DSN" -c "SELECT (SELECT count(*) FROM events_mirror) AS events_mirror, (SELECT count(*) FROM dlq_events) AS dlq_events"
psql -X -q -d "$EVPIPE_DSN" -c "SELECT reason_code, count(*) FROM dlq_events GROUP BY 1 ORDER BY 2 DESC"
echo "a few metrics (http://127.0.0.1:$http_port/metrics):"
http_get "$http_port" /metrics |
  grep -E '^evpipe_(ingest_total|duplicates_total|batches_total|event_latency_seconds_count)' | head -8

kill -TERM "$evpipe_pid"
wait "$evpipe_pid" && log "evpipe drained and exited 0"
evpipe_pid=""

# AutoCore (docs/routes.md): device JSON without an envelope, routed into
# typed tables by config/examples/autocore.toml through the same Mosquitto.
log "AutoCore: three simulated devices publish status, telemetry and relay messages"
psql -X -q -d "$EVPIPE_DSN" -f "$EVPIPE_ROOT/schemas/examples/autocore.sql" >/dev/null
{ printf '[http]\nlisten = "127.0.0.1:%s"\n' "$(free_port)"; cat "$EVPIPE_ROOT/config/examples/autocore.toml"; } \
  >"$scratch/autocore.toml"
export EVPIPE_DSN AUTOCORE_BROKER="mqtt://127.0.0.1:$MQTT_PORT"
"$bin/app/evpipe" migrate --config "$scratch/autocore.toml" 2>/dev/null
"$bin/app/evpipe" run --config "$scratch/autocore.toml" 2>"$scratch/autocore.log" &
evpipe_pid=$!
sleep 1  # its session subscribes
publish() {  # TOPIC LINE...: one QoS 1 message per line
  local topic="$1"; shift
  printf '%s\n' "$@" >"$scratch/device.ndjson"
  "$bin/load/evpipe-load" --target "mqtt://127.0.0.1:$MQTT_PORT" --topic "$topic" --input "$scratch/device.ndjson" \
    --quiet >/dev/null
}
for d in 1 2 3; do
  id="ESP32_00$d"
  # Status out of order: the device's timestamp decides, 10:30:20 wins.
  publish "autocore/$id/status" \
    "{\"device_id\":\"$id\",\"status\":\"online\",\"ip_address\":\"192.168.1.10$d\",\"firmware_version\":\"1.2.0\",\"uptime\":3620,\"timestamp\":\"2025-01-28T10:30:20Z\"}" \
    "{\"device_id\":\"$id\",\"status\":\"booting\",\"ip_address\":\"192.168.1.10$d\",\"firmware_version\":\"1.1.9\",\"uptime\":5,\"timestamp\":\"2025-01-28T10:29:00Z\"}"
  publish "autocore/$id/telemetry" \
    "{\"device_id\":\"$id\",\"temperature\":2$d.6,\"humidity\":45.2,\"voltage\":3.28,\"memory_free\":45120,\"timestamp\":\"2025-01-28T10:30:15Z\"}" \
    "{\"device_id\":\"$id\",\"temperature\":2$d.9,\"humidity\":44.8,\"voltage\":3.27,\"memory_free\":45088,\"timestamp\":\"2025-01-28T10:30:45Z\"}"
  publish "autocore/$id/relay/0/status" \
    "{\"device_id\":\"$id\",\"relay_index\":0,\"state\":true,\"triggered_by\":\"manual\",\"timestamp\":\"2025-01-28T10:30:30Z\"}" \
    "{\"device_id\":\"$id\",\"relay_index\":0,\"state\":false,\"triggered_by\":\"schedule\",\"timestamp\":\"2025-01-28T10:31:30Z\"}"
done
for _ in $(seq 100); do
  [ "$(psql -X -Atq -d "$EVPIPE_DSN" -c "SELECT count(*) FROM relay_events")" -ge 6 ] && break
  sleep 0.1
done
psql -X -q -d "$EVPIPE_DSN" -c "SELECT device_id, status, is_online, ip_address, firmware_version, last_seen FROM devices ORDER BY 1"
psql -X -q -d "$EVPIPE_DSN" -c "SELECT device_id, relay_index, current_state, triggered_by, changed_at FROM relays ORDER BY 1, 2"
psql -X -q -d "$EVPIPE_DSN" -c "SELECT device_id, count(*) AS telemetry_rows, max(temperature) FROM telemetry GROUP BY 1 ORDER BY 1"
kill -TERM "$evpipe_pid"
wait "$evpipe_pid" && log "evpipe (AutoCore) drained and exited 0"
evpipe_pid=""
