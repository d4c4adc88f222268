#!/usr/bin/env bash
# The perf harness: runs named scenarios against a private PostgreSQL it
# starts and stops itself, and writes a Markdown table and PNG plots.
#
#   perf/run.sh [scenario ...] [--events N] [--latency-seconds S] [--rate R] [--out DIR]
#
# Scenarios (default: all, in this order):
#   tcp-max    maximum sustained rate over TCP (N events, 4 connections, closed loop)
#   dlq-heavy  the same with 10% invalid events
#   dup-heavy  the same with 20% resent keys
#   latency    constant rate at 50% of tcp-max's rate (or --rate) for S seconds (default 60)
#   mqtt-drain N QoS 1 messages preloaded in Mosquitto for evpipe's persistent
#              session, drained after evpipe starts (perf/mqtt_drain.sh has more)
# Each throughput scenario also times `psql \copy` of the rows it mirrors into a
# fresh events_mirror, in the same run, and reports evpipe's rate as a ratio.
# Results: DIR/results.md, DIR/latency.png, DIR/rate.png, and the raw files
# (default DIR: perf/results/<date-time>).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 latency_seconds=60 rate="" out="" scenarios=()
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --latency-seconds) latency_seconds="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    tcp-max|dlq-heavy|dup-heavy|latency|mqtt-drain) scenarios+=("$1"); shift ;;
    *) die "unknown scenario or option $1 (see --help)" ;;
  esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=(tcp-max dlq-heavy dup-heavy latency mqtt-drain)
out="${out:-$EVPIPE_ROOT/perf/results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"

perf_setup 0
rows_md="| scenario | events | evpipe events/s | psql \\copy rows/s | ratio | p50 ms | p99 ms | p99.9 ms | max ms |
|---|---|---|---|---|---|---|---|---|"
max_rate=""

# throughput NAME INVALID_FRAC DUP_FRAC
throughput() {
  local name="$1" inv="$2" dup="$3"
  log "$name: $events events, invalid $inv, resent $dup"
  "$bin/load/evpipe-load" --emit "$scratch/$name.ndjson" --emit-csv "$scratch/$name.csv" --count "$events" \
    --invalid-frac "$inv" --dup-frac "$dup" --run-id "$name" 2>/dev/null
  local rows copy
  rows=$(wc -l <"$scratch/$name.csv")
  copy=$(copy_rate "$scratch/$name.csv" "$rows")
  fresh_table
  evpipe_start
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/$name.ndjson" --connections 4 \
    --quiet --json "$out/$name.json" --hdr "$out/$name.hdr" --timeline "$out/$name.timeline.csv" >"$out/$name.txt"
  evpipe_stop
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$rows" ] || die "$name: evpipe stored a wrong row count"
  local ev
  ev=$(json_field "$out/$name.json" "['throughput']")
  [ "$name" = tcp-max ] && max_rate="$ev"
  rows_md="$rows_md
| $name | $events | $(printf '%.0f' "$ev") | $copy | $(awk -v a="$ev" -v b="$copy" 'BEGIN{printf "%.2f", a/b}') | $(json_field "$out/$name.json" "['latency_ms']['p50']") | $(json_field "$out/$name.json" "['latency_ms']['p99']") | $(json_field "$out/$name.json" "['latency_ms']['p99_9']") | $(json_field "$out/$name.json" "['latency_ms']['max']") |"
  log "$name: evpipe $(printf '%.0f' "$ev") events/s, psql \\copy $copy rows/s"
}

latency() {
  local r="${rate:-}"
  if [ -z "$r" ]; then
    [ -n "$max_rate" ] || die "latency needs --rate R or the tcp-max scenario before it"
    r=$(awk -v m="$max_rate" 'BEGIN{printf "%.0f", m / 2}')
  fi
  log "latency: $r events/s for $latency_seconds s (5 s warm-up left out)"
  fresh_table
  evpipe_start
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --rate "$r" --duration "$latency_seconds" \
    --warmup 5 --connections 2 --quiet --json "$out/latency.json" --hdr "$out/latency.hdr" \
    --timeline "$out/latency.timeline.csv" >"$out/latency.txt"
  evpipe_stop
  local sent
  sent=$(json_field "$out/latency.json" "['sent']")
  rows_md="$rows_md
| latency ($r/s, ${latency_seconds} s) | $sent | $(printf '%.0f' "$(json_field "$out/latency.json" "['throughput']")") | | | $(json_field "$out/latency.json" "['latency_ms']['p50']") | $(json_field "$out/latency.json" "['latency_ms']['p99']") | $(json_field "$out/latency.json" "['latency_ms']['p99_9']") | $(json_field "$out/latency.json" "['latency_ms']['max']") |"
}

# The backlog drain through Mosquitto: no per-event latency (the messages
# waited in the broker by design), only the rate against psql \copy.
mqtt_drain_scenario() {
  log "mqtt-drain: $events messages preloaded in Mosquitto"
  [ -n "${MQTT_PID:-}" ] || mqtt_setup
  "$bin/load/evpipe-load" --emit "$scratch/mqtt-drain.ndjson" --emit-csv "$scratch/mqtt-drain.csv" --count "$events" \
    --run-id mqtt-drain 2>/dev/null
  local rows copy rate preload
  rows=$(wc -l <"$scratch/mqtt-drain.csv")
  copy=$(copy_rate "$scratch/mqtt-drain.csv" "$rows")
  read -r rate preload <<<"$(mqtt_drain "$scratch/mqtt-drain.ndjson" "$rows")"
  rows_md="$rows_md
| mqtt-drain (via Mosquitto) | $events | $rate | $copy | $(awk -v a="$rate" -v b="$copy" 'BEGIN{printf "%.2f", a/b}') | | | | |"
  log "mqtt-drain: evpipe $rate rows/s, psql \\copy $copy rows/s"
}

for s in "${scenarios[@]}"; do
  case "$s" in
    tcp-max) throughput tcp-max 0 0 ;;
    mqtt-drain) mqtt_drain_scenario ;;
    dlq-heavy) throughput dlq-heavy 0.1 0 ;;
    dup-heavy) throughput dup-heavy 0 0.2 ;;
    latency) latency ;;
  esac
done

# Plots: latency percentile distributions (HdrHistogram layout, log x axis)
# and acked events per second over time.
hdrs=() timelines=()
for s in "${scenarios[@]}"; do
  [ -f "$out/$s.hdr" ] && hdrs+=("$s")
  [ -f "$out/$s.timeline.csv" ] && timelines+=("$s")
done
{
  echo "set terminal pngcairo size 900,540"
  echo "set output '$out/latency.png'"
  echo "set title 'evpipe latency by percentile (intended send to ack)'"
  echo "set logscale x; set logscale y; set grid"
  echo "set xlabel 'percentile'; set ylabel 'latency (ms)'"
  echo "set xtics ('50%%' 2, '90%%' 10, '99%%' 100, '99.9%%' 1000, '99.99%%' 10000, '99.999%%' 100000)"
  echo "set key right center box opaque"
  printf "plot "
  sep=""
  for s in "${hdrs[@]}"; do
    printf "%s'%s' using 4:1 every ::2 with lines lw 2 title '%s'" "$sep" "$out/$s.hdr" "$s"
    sep=", "
  done
  echo
  echo "set output '$out/rate.png'"
  echo "unset logscale; set xtics auto; set title 'acked events per second'"
  echo "set xlabel 'seconds'; set ylabel 'events/s'; set datafile separator ','"
  printf "plot "
  sep=""
  for s in "${timelines[@]}"; do
    printf "%s'%s' using 1:2 every ::1 with linespoints lw 2 title '%s'" "$sep" "$out/$s.timeline.csv" "$s"
    sep=", "
  done
  echo
} >"$out/plots.gp"
gnuplot "$out/plots.gp" 2>"$out/gnuplot.log" || log "gnuplot failed: $(tail -2 "$out/gnuplot.log")"

cat >"$out/results.md" <<MD
# evpipe perf run $(date -u +%Y-%m-%dT%H:%M:%SZ)

machine: $(machine_line)

$rows_md

Throughput rows: the same events sent over 4 TCP connections as fast as evpipe
acks them (closed loop); psql \\copy loads the rows evpipe mirrors (valid, first
copy of each key) into a fresh events_mirror in the same run. Latency: open
loop at a constant rate, measured from each event's intended send time.

![latency](latency.png)
![rate](rate.png)
MD
echo
cat "$out/results.md"
log "results in $out"
