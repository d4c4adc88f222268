#!/usr/bin/env bash
# MQTT backlog drain against psql \copy, in one run on one machine.
#
# Preloads N QoS 1 messages (default 200000 events of ~400 B, all valid and
# unique) into a Mosquitto persistent session that evpipe subscribed with and
# then left, starts evpipe, and times until every row is committed. Before
# that, the same rows go into a fresh events_mirror with psql \copy. Prints
# both rates and their ratio (issue target: 0.8 or better). To tell the
# broker's share from evpipe's, each run also times the same N messages sent
# by evpipe-load playing the broker itself (mqtt-serve://, no Mosquitto).
# Then publish-to-PUBACK latency: evpipe-load as the broker, at a constant
# --latency-rate for --latency-seconds, latency until evpipe's PUBACK.
#   perf/mqtt_drain.sh [--count N] [--runs R] [--latency-rate N] [--latency-seconds S]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

count=200000
runs=1
latency_rate=20000
latency_seconds=30
while [ $# -gt 0 ]; do
  case "$1" in
    --count) count="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --latency-rate) latency_rate="$2"; shift 2 ;;
    --latency-seconds) latency_seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

perf_setup
mosquitto_start "$scratch/mqtt"
serve_port="$(free_port)"
cp "$scratch/evpipe.toml" "$scratch/evpipe-tcp.toml"
cat >>"$scratch/evpipe.toml" <<CONF
[[sources.mqtt]]
url = "mqtt://127.0.0.1:$MQTT_PORT"
client_id = "evpipe-perf-drain"
topics = ["perf/mqtt/#"]
CONF
# The same evpipe, but its MQTT session goes to evpipe-load playing the broker.
cp "$scratch/evpipe-tcp.toml" "$scratch/evpipe-serve.toml"
cat >>"$scratch/evpipe-serve.toml" <<CONF
[[sources.mqtt]]
url = "mqtt://127.0.0.1:$serve_port"
client_id = "evpipe-perf-serve"
topics = ["perf/mqtt/#"]
base_ms = 10
max_ms = 50
CONF
serve_rate() {  # rows/s of --count messages from evpipe-load as the broker, into a fresh table
  fresh_table
  cp "$scratch/evpipe.toml" "$scratch/evpipe-broker.toml"
  cp "$scratch/evpipe-serve.toml" "$scratch/evpipe.toml"
  evpipe_start
  "$bin/load/evpipe-load" --target "mqtt-serve://127.0.0.1:$serve_port" --topic perf/mqtt/serve \
    --input "$scratch/drain.ndjson" --quiet --json "$scratch/serve.json" "$@" >/dev/null
  evpipe_stop
  cp "$scratch/evpipe-broker.toml" "$scratch/evpipe.toml"
}

"$bin/load/evpipe-load" --count "$count" --run-id drain --invalid-frac 0 --dup-frac 0 \
  --emit "$scratch/drain.ndjson" --emit-csv "$scratch/drain.csv" 2>/dev/null
rows="$(wc -l <"$scratch/drain.csv")"
echo "# $(machine_line)"
echo "# $count messages, $(($(stat -c %s "$scratch/drain.ndjson") / count)) B each on average"
printf '%-4s %12s %10s %16s %7s %18s %7s\n' run copy_rows/s preload_s via_mosquitto/s ratio no_broker_rows/s ratio
for r in $(seq "$runs"); do
  copy="$(copy_rate "$scratch/drain.csv" "$rows")"
  fresh_table
  # Let evpipe create its session and subscription, then stop it.
  evpipe_start
  sleep 1
  evpipe_stop
  t0=$(now)
  # evpipe-load waits for the broker's PUBACK of every message (mosquitto_pub
  # -l 2.0.11 exits with messages still queued: 68,934 of 200,000 arrived).
  "$bin/load/evpipe-load" --target "mqtt://127.0.0.1:$MQTT_PORT" --topic perf/mqtt/drain \
    --input "$scratch/drain.ndjson" --quiet >/dev/null
  t1=$(now)
  evpipe_start
  for _ in $(seq 3000); do
    [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" -ge "$rows" ] && break
    sleep 0.2
  done
  t2=$(now)
  got="$(psqlq -c 'SELECT count(*) FROM events_mirror')"
  [ "$got" = "$rows" ] || die "evpipe committed $got rows, expected $rows"
  evpipe_stop
  rate="$(echo "$rows $t1 $t2" | awk '{printf "%.0f", $1 / ($3 - $2)}')"
  serve_rate
  direct="$(json_field "$scratch/serve.json" "['throughput']" | awk '{printf "%.0f", $1}')"
  printf '%-4s %12s %10.1f %16s %7.2f %18s %7.2f\n' "$r" "$copy" "$(echo "$t0 $t1" | awk '{print $2 - $1}')" "$rate" \
    "$(echo "$rate $copy" | awk '{print $1 / $2}')" "$direct" "$(echo "$direct $copy" | awk '{print $1 / $2}')"
done

echo
echo "# publish-to-PUBACK latency, evpipe-load as the broker, $latency_rate msg/s for $latency_seconds s (2 s warmup)"
"$bin/load/evpipe-load" --emit "$scratch/drain.ndjson" --count "$((latency_rate * (latency_seconds + 1)))" \
  --run-id latency 2>/dev/null
serve_rate --rate "$latency_rate" --duration "$latency_seconds" --warmup 2
python3 - "$scratch/serve.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
l = d["latency_ms"]
print(f"acked {d['acked']} at {d['throughput']:.0f}/s; latency ms p50 {l['p50']:.2f}  p90 {l['p90']:.2f}  "
      f"p99 {l['p99']:.2f}  p99.9 {l['p99_9']:.2f}  max {l['max']:.2f}")
PY
