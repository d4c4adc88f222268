#!/usr/bin/env bash
# MQTT backlog drain against psql \copy, in one run on one machine.
#
# Preloads N QoS 1 messages (default 200000 events of ~400 B, all valid and
# unique) into a Mosquitto persistent session that evpipe subscribed with and
# then left, starts evpipe, and times until every row is committed. Before
# that, the same rows go into a fresh events_mirror with psql \copy. Prints
# both rates and their ratio (issue target: 0.8 or better).
#   perf/mqtt_drain.sh [--count N] [--runs R]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

count=200000
runs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --count) count="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

perf_setup
mosquitto_start "$scratch/mqtt"
cat >>"$scratch/evpipe.toml" <<CONF
[[sources.mqtt]]
url = "mqtt://127.0.0.1:$MQTT_PORT"
client_id = "evpipe-perf-drain"
topics = ["perf/mqtt/#"]
CONF

"$bin/load/evpipe-load" --count "$count" --run-id drain --invalid-frac 0 --dup-frac 0 \
  --emit "$scratch/drain.ndjson" --emit-csv "$scratch/drain.csv" 2>/dev/null
rows="$(wc -l <"$scratch/drain.csv")"
echo "# $(machine_line)"
echo "# $count messages, $(($(stat -c %s "$scratch/drain.ndjson") / count)) B each on average"
printf '%-4s %12s %12s %14s %7s\n' run copy_rows/s preload_s evpipe_rows/s ratio
for r in $(seq "$runs"); do
  copy="$(copy_rate "$scratch/drain.csv" "$rows")"
  fresh_table
  # Let evpipe create its session and subscription, then stop it.
  evpipe_start
  sleep 1
  evpipe_stop
  t0=$(now)
  mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -t perf/mqtt/drain -l <"$scratch/drain.ndjson"
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
  printf '%-4s %12s %12.1f %14s %7.2f\n' "$r" "$copy" "$(echo "$t0 $t1" | awk '{print $2 - $1}')" "$rate" \
    "$(echo "$rate $copy" | awk '{print $1 / $2}')"
done
