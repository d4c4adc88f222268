#!/usr/bin/env bash
# evpipe in 15 seconds: installs missing Debian packages, builds Release,
# starts a private PostgreSQL and Mosquitto on loopback in a scratch
# directory, migrates, runs evpipe, sends it a stream of events (valid,
# invalid, duplicates) over TCP for about 15 s, then 2000 over MQTT, prints
# events/s, latency percentiles and the row counts of both tables, then stops
# everything it started.
#   DEMO_RATE=20000 DEMO_SECONDS=15 scripts/demo.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
rate="${DEMO_RATE:-20000}"
seconds="${DEMO_SECONDS:-15}"

ensure_packages
build_evpipe Release
bin="$EVPIPE_BUILD_DIR"

scratch_cluster
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
