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
mqtt_setup

"$bin/load/evpipe-load" --count "$count" --run-id drain --invalid-frac 0 --dup-frac 0 \
  --emit "$scratch/drain.ndjson" --emit-csv "$scratch/drain.csv" 2>/dev/null
rows="$(wc -l <"$scratch/drain.csv")"
echo "# $(machine_line)"
echo "# $count messages, $(($(stat -c %s "$scratch/drain.ndjson") / count)) B each on average"
printf '%-4s %12s %10s %16s %7s %18s %7s\n' run copy_rows/s preload_s via_mosquitto/s ratio no_broker_rows/s ratio
for r in $(seq "$runs"); do
  copy="$(copy_rate "$scratch/drain.csv" "$rows")"
  read -r rate preload <<<"$(mqtt_drain "$scratch/drain.ndjson" "$rows")"
  mqtt_serve "$scratch/serve.json" --input "$scratch/drain.ndjson"
  direct="$(json_field "$scratch/serve.json" "['throughput']" | awk '{printf "%.0f", $1}')"
  printf '%-4s %12s %10s %16s %7.2f %18s %7.2f\n' "$r" "$copy" "$preload" "$rate" \
    "$(echo "$rate $copy" | awk '{print $1 / $2}')" "$direct" "$(echo "$direct $copy" | awk '{print $1 / $2}')"
done

echo
echo "# publish-to-PUBACK latency, evpipe-load as the broker, $latency_rate msg/s for $latency_seconds s (2 s warmup)"
"$bin/load/evpipe-load" --emit "$scratch/drain.ndjson" --count "$((latency_rate * (latency_seconds + 1)))" \
  --run-id latency 2>/dev/null
mqtt_serve "$scratch/serve.json" --input "$scratch/drain.ndjson" --rate "$latency_rate" --warmup 2
python3 - "$scratch/serve.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
l = d["latency_ms"]
print(f"acked {d['acked']} at {d['throughput']:.0f}/s; latency ms p50 {l['p50']:.2f}  p90 {l['p90']:.2f}  "
      f"p99 {l['p99']:.2f}  p99.9 {l['p99_9']:.2f}  max {l['max']:.2f}")
PY
