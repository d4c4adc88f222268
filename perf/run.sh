#!/usr/bin/env bash
# The perf harness: runs named scenarios against a private PostgreSQL it
# starts and stops itself, and writes a Markdown table and PNG plots.
#
#   perf/run.sh [scenario ...] [--events N] [--latency-seconds S] [--rate R]
#               [--floor-runs N] [--stall-ms MS] [--warmup W] [--shards K]
#               [--route-by key|connection] [--selective-acks on|off] [--tick-us T] [--first ARM]
#               [--platform-warmup S] [--probe-rate R] [--out DIR]
#
# --shards K: evpipe's [pipeline] shards, and the floor's and the ceiling's
# connections (default: one per core).
# --route-by: the TCP source's route_by (default key; docs/operations.md).
# --selective-acks: the TCP source's selective_acks (default on; docs/operations.md,
# "Acks"); evpipe-load ends an event's latency at the first ack that names it.
# --tick-us: evpipe-load's --tick-us in the latency runs (default 0: each event
# sent when it falls due; T: at most one send per T µs per connection).
# --first: which of evpipe, floor and tcp-floor goes first in latency-floor's
# first run (default evpipe; the others follow in turn).
# --platform-warmup S: before the first latency run, the floor client at the
# same rate for S seconds into a fresh table, not counted (default 60; 0: none):
# in the first minute of open-loop load after the cluster starts (even after
# bulk loads), whatever ran had a p99 of about 70 ms against 20-28 for the runs
# after it (docs/performance-hiccups.md, "The first minute is the platform's").
# --probe-rate R: beside every latency arm, a one-row INSERT committed R times
# a second (pgbench), whose seconds over --stall-ms are the platform's commit
# stalls in that arm's own minute (default 50; 0: none). The floor client
# witnesses only its own minute; the probe witnesses each arm's.
# Scenarios (default: all, in this order):
#   tcp-max    maximum sustained rate over TCP (N events, 4 connections, closed loop)
#   dlq-heavy  the same with 10% invalid events
#   dup-heavy  the same with 20% resent keys
#   latency    constant rate at 50% of tcp-max's rate (or --rate) for S seconds (default 60),
#              then the floor client at the same rate for as long
#   latency-floor  evpipe, the floor client and the TCP floor in turn at that rate,
#              --floor-runs times each (default 3; each first, second and third once
#              in every three runs), S seconds each; medians; latency over time plotted
#   mqtt-drain N QoS 1 messages preloaded in Mosquitto for evpipe's persistent
#              session, drained after evpipe starts (perf/mqtt_drain.sh has more)
# Each throughput scenario also times `psql \copy` of the rows it mirrors into a
# fresh events_mirror, and the floor client's closed-loop COPY of as many rows
# over K streams (K = shards: the ceiling) and over 1, in the same run, and
# reports evpipe's rate as ratios; tcp-max also sends the same events into the
# TCP floor (perf/tcp_floor.cc: the same load generator and acks over the same
# sockets, a server that only reads, COPYs, commits and acks: evpipe's whole
# TCP path without evpipe). Every latency figure of evpipe stands next to
# the floor client's (plain libpq COPY + commit, K connections, open loop at the
# same rate, latency from intended send time to commit); a run in which the
# floor itself kept a row waiting over --stall-ms (default 50) in some second
# is marked as a platform stall.
# Results: DIR/results.md, DIR/latency.png, DIR/rate.png, DIR/latency-time-*.png
# (per second: evpipe above the TCP floor, when run, and the floor), and the raw files
# (default DIR: perf/results/<date-time>).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 latency_seconds=60 rate="" out="" scenarios=() floor_runs=3 warmup=5 shards=0 route_by=key selective_acks=on tick_us=0 first_arm=evpipe
platform_warmup=60 platform_warmed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --latency-seconds) latency_seconds="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --floor-runs) floor_runs="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    --route-by) route_by="$2"; shift 2 ;;
    --selective-acks) selective_acks="$2"; shift 2 ;;
    --tick-us) tick_us="$2"; shift 2 ;;
    --stall-ms) stall_ms="$2"; shift 2 ;;
    --first) first_arm="$2"; shift 2 ;;
    --platform-warmup) platform_warmup="$2"; shift 2 ;;
    --probe-rate) probe_rate="$2"; shift 2
      [[ "$probe_rate" =~ ^[0-9]+$ ]] || die "--probe-rate: a whole number of commits a second (0: none), not $probe_rate" ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    tcp-max|dlq-heavy|dup-heavy|latency|latency-floor|mqtt-drain) scenarios+=("$1"); shift ;;
    *) die "unknown scenario or option $1 (see --help)" ;;
  esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=(tcp-max dlq-heavy dup-heavy latency mqtt-drain)
out="${out:-$EVPIPE_ROOT/perf/results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"

[ "$route_by" = key ] || [ "$route_by" = connection ] || die "--route-by: key or connection, not $route_by"
[ "$selective_acks" = on ] || [ "$selective_acks" = off ] || die "--selective-acks: on or off, not $selective_acks"
case "$first_arm" in
  evpipe) first_offset=0 ;;
  floor) first_offset=1 ;;
  tcp-floor) first_offset=2 ;;
  *) die "--first: evpipe, floor or tcp-floor, not $first_arm" ;;
esac
perf_setup "$shards"
echo "route_by = \"$route_by\"" >>"$scratch/evpipe.toml"  # the [[sources.tcp]] section is the file's last
echo "selective_acks = $([ "$selective_acks" = on ] && echo true || echo false)" >>"$scratch/evpipe.toml"
rows_md="| scenario | events | evpipe events/s | psql \\copy rows/s | ratio | ceiling: $shard_count-stream COPY rows/s | ratio | 1-stream COPY rows/s | ratio | TCP floor events/s | ratio | p50 ms | p99 ms | p99.9 ms | max ms |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
lat_md="| run | rate/s | order | floor p50 / p99 / p99.9 / max ms | evpipe p50 / p99 / p99.9 / max ms | evpipe ÷ floor p99 | p99.9 | max | evpipe − floor p99 ms | TCP floor p50 / p99 / p99.9 / max ms | evpipe ÷ TCP floor p99 | evpipe − TCP floor p99 ms | floor stall (s:max) | commit probe stalls: evpipe's / floor's / TCP floor's minute |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
cpu_md="| scenario | PostgreSQL µs/row | evpipe µs/event | evpipe-load µs/event | all three µs/event | PostgreSQL µs/row in the $shard_count-stream COPY ceiling |
|---|---|---|---|---|---|"
max_rate="" stall_runs=0 lat_runs=0 warmup_md=""

# throughput NAME INVALID_FRAC DUP_FRAC
throughput() {
  local name="$1" inv="$2" dup="$3"
  log "$name: $events events, invalid $inv, resent $dup"
  "$bin/load/evpipe-load" --emit "$scratch/$name.ndjson" --emit-csv "$scratch/$name.csv" --count "$events" \
    --invalid-frac "$inv" --dup-frac "$dup" --run-id "$name" 2>/dev/null
  local rows copy ceil one
  rows=$(wc -l <"$scratch/$name.csv")
  copy=$(copy_rate "$scratch/$name.csv" "$rows")
  ceil=$(floor_ceiling "$rows" "$shard_count")
  local ceil_pg; ceil_pg=$(cat "$scratch/ceiling.pg_ticks")
  one=$(floor_ceiling "$rows" 1)
  local tcpf=""
  if [ "$inv" = 0 ] && [ "$dup" = 0 ]; then  # the TCP floor has no dead letters or dedup: every line is a row
    tcpf=$(tcp_floor_bulk "$scratch/$name.ndjson" "$rows")
  fi
  fresh_table
  evpipe_start
  local mark ticks load_cpu
  mark="$(cpu_mark)"
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" \
      --input "$scratch/$name.ndjson" --connections 4 --quiet --json "$out/$name.json" --hdr "$out/$name.hdr" \
      --timeline "$out/$name.timeline.csv" >"$out/$name.txt" 2>"$scratch/load.err"
  ticks=$(cpu_ticks_since "$mark")
  # The load generator's own user and system time while it sent (reading
  # its input file before is not in the timed window).
  load_cpu=$(json_field "$out/$name.json" "['cpu_seconds']")
  evpipe_stop
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$rows" ] || die "$name: evpipe stored a wrong row count"
  local ev
  ev=$(json_field "$out/$name.json" "['throughput']")
  [ "$name" = tcp-max ] && max_rate="$ev"
  rows_md="$rows_md
| $name | $events | $(printf '%.0f' "$ev") | $copy | $(ratio "$ev" "$copy") | $ceil | $(ratio "$ev" "$ceil") | $one | $(ratio "$ev" "$one") | $tcpf | ${tcpf:+$(ratio "$ev" "$tcpf")} | $(json_field "$out/$name.json" "['latency_ms']['p50']") | $(json_field "$out/$name.json" "['latency_ms']['p99']") | $(json_field "$out/$name.json" "['latency_ms']['p99_9']") | $(json_field "$out/$name.json" "['latency_ms']['max']") |"
  log "$name: evpipe $(printf '%.0f' "$ev") events/s, psql \\copy $copy rows/s, $shard_count-stream COPY $ceil, 1-stream $one rows/s${tcpf:+, TCP floor $tcpf events/s}"
  # Where the cores went, per event: the 2-core budget of the ratio above.
  cpu_md="$cpu_md
$(echo "$name $events $rows $ticks $load_cpu $ceil_pg $(getconf CLK_TCK)" | awk '{
    hz = $8; us = 1e6 / hz
    printf "| %s | %.1f | %.1f | %.1f | %.1f | %.1f |", $1, $4 * us / $3, $5 * us / $2, $6 * 1e6 / $2,
      ($4 + $5) * us / $2 + $6 * 1e6 / $2, $7 * us / $3 }')"
}

# The four percentiles of a JSON as "p50 / p99 / p99.9 / max".
pcts() {
  python3 -c "import json,sys; l=json.load(open(sys.argv[1]))['latency_ms']; print(' / '.join('%.1f' % l[k] for k in ('p50','p99','p99_9','max')))" "$1"
}

# open_load NAME RATE SECONDS: evpipe-load open loop against whatever listens
# on the TCP port (2 connections, as the latency scenario always did).
open_load() {
  local name="$1" r="$2" secs="$3"
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --rate "$r" --duration "$secs" \
    --warmup "$warmup" --connections 2 --tick-us "$tick_us" --quiet --json "$out/$name.json" --hdr "$out/$name.hdr" \
    --timeline "$out/$name.timeline.csv" --latency-timeline "$out/$name.latency.csv" >"$out/$name.txt"
}

# evpipe_open NAME RATE SECONDS: fresh table, evpipe, the open loop, evpipe stopped.
evpipe_open() {
  local name="$1" r="$2" secs="$3"
  fresh_table
  evpipe_start
  open_load "$name" "$r" "$secs"
  evpipe_stop
  # Its warnings: the slow-batch traces and I/O stalls of the run (docs/operations.md, "Hiccups").
  cp "$scratch/evpipe.log" "$out/$name.evpipe.log"
}

# tcp_floor_start CLIENTS: the TCP floor (perf/tcp_floor.cc) on evpipe's port
# with K = shards libpq connections, exiting once CLIENTS connections are done.
tcp_floor_start() {
  rm -f "$scratch/tcp-floor.port"
  "$bin/perf/tcp-floor" --dsn "$EVPIPE_DSN" --listen "127.0.0.1:$tcp_port" --connections "$shard_count" \
    --clients "$1" --port-file "$scratch/tcp-floor.port" --json "$scratch/tcp-floor.json" >"$scratch/tcp-floor.txt" 2>&1 &
  tcp_floor_pid=$!
  echo "$tcp_floor_pid" >"$scratch/tcp-floor.pid"  # for cleanup_scratch, should this run fail
  local i
  for i in $(seq 100); do [ -s "$scratch/tcp-floor.port" ] && return 0; sleep 0.05; done
  die "tcp-floor did not start: $(tail -2 "$scratch/tcp-floor.txt")"
}
tcp_floor_wait() {
  wait "$tcp_floor_pid" || die "tcp-floor failed: $(tail -2 "$scratch/tcp-floor.txt")"
  rm -f "$scratch/tcp-floor.pid"
}

# tcp_floor_bulk FILE ROWS: events/s of the TCP floor taking FILE's events as
# evpipe does in the throughput runs (4 connections, closed loop, every ack
# after its commit), into a fresh table.
tcp_floor_bulk() {
  fresh_table
  tcp_floor_start 4
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$1" --connections 4 --quiet \
    --json "$scratch/tcp-floor-load.json" >"$scratch/tcp-floor-load.txt" 2>&1 || die "evpipe-load into tcp-floor failed"
  tcp_floor_wait
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$2" ] || die "tcp-floor stored a wrong row count"
  printf '%.0f' "$(json_field "$scratch/tcp-floor-load.json" "['throughput']")"
}

# tcp_floor_open NAME RATE SECONDS: the same open loop into the TCP floor instead of evpipe.
tcp_floor_open() {
  fresh_table
  tcp_floor_start 2
  open_load "$@"
  tcp_floor_wait
}

# probe_cell NAME: the commit probe's stalls beside arm NAME, or none.
probe_cell() {
  local st
  st=$(probe_stalls "$out/$1.probe")
  echo "${st:-none}"
}

# latency_row LABEL RATE ORDER EVPIPE_NAME FLOOR_NAME [TCP_FLOOR_NAME]: one
# row of the latency table; counts platform stalls.
latency_row() {
  local label="$1" r="$2" first="$3" e="$out/$4.json" f="$out/$5.json" t="" stalls probe
  [ -n "${6:-}" ] && t="$out/$6.json"
  stalls=$(stall_seconds "$out/$5.latency.csv")
  probe="$(probe_cell "$4") / $(probe_cell "$5")"
  [ -n "${6:-}" ] && probe="$probe / $(probe_cell "$6")"
  lat_runs=$((lat_runs + 1))
  [ -n "$stalls" ] && stall_runs=$((stall_runs + 1))
  g() { json_field "$1" "['latency_ms']['$2']"; }
  minus() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", a-b}'; }
  local tcells="| | | |"
  [ -n "$t" ] && tcells="| $(pcts "$t") | $(ratio "$(g "$e" p99)" "$(g "$t" p99)") | $(minus "$(g "$e" p99)" "$(g "$t" p99)") |"
  lat_md="$lat_md
| $label | $r | $first | $(pcts "$f") | $(pcts "$e") | $(ratio "$(g "$e" p99)" "$(g "$f" p99)") | $(ratio "$(g "$e" p99_9)" "$(g "$f" p99_9)") | $(ratio "$(g "$e" max)" "$(g "$f" max)") | $(minus "$(g "$e" p99)" "$(g "$f" p99)") $tcells ${stalls:-none} | $probe |"
  latency_time_plot "$out/latency-time-$label.png" "latency over time, $label, $r events/s" \
    "$out/$4.latency.csv" "$out/$5.latency.csv" ${6:+"$out/$6.latency.csv"}
}

# warm_platform RATE: once, before the first latency run (--platform-warmup).
warm_platform() {
  [ "$platform_warmup" != 0 ] && [ -z "$platform_warmed" ] || return 0
  log "platform warm-up: the floor client at $1 events/s for $platform_warmup s (not counted)"
  floor_open "$out/platform-warmup.json" "$out/platform-warmup" "$1" "$platform_warmup"
  warmup_md="The platform warm-up before the latency runs (the floor client at $1 events/s for $platform_warmup s
on a fresh table, not counted): p50 / p99 / p99.9 / max $(pcts "$out/platform-warmup.json") ms."
  log "platform warm-up: p50 / p99 / p99.9 / max $(pcts "$out/platform-warmup.json") ms"
  platform_warmed=1
}

latency_rate() {
  local r="${rate:-}"
  if [ -z "$r" ]; then
    [ -n "$max_rate" ] || die "latency scenarios need --rate R or the tcp-max scenario before them"
    r=$(awk -v m="$max_rate" 'BEGIN{printf "%.0f", m / 2}')
  fi
  echo "$r"
}

# evpipe, the floor client and the TCP floor in turn, floor_runs times each;
# medians of each percentile and of the ratios over all runs, and which runs
# had no platform stall.
latency_floor() {
  local r i order probe_clean=() e_p99=() f_p99=() t_p99=() e_p999=() f_p999=() e_max=() f_max=() clean=()
  r=$(latency_rate)
  warm_platform "$r"
  for i in $(seq "$floor_runs"); do
    # Each of the three first, second and third once in every three runs;
    # --first picks the first run's first.
    case $(((i - 1 + first_offset) % 3)) in
      0) order="evpipe floor tcp-floor" ;;
      1) order="floor tcp-floor evpipe" ;;
      2) order="tcp-floor evpipe floor" ;;
    esac
    log "latency-floor run $i/$floor_runs: $r events/s for $latency_seconds s: ${order// /, }"
    local arm
    for arm in $order; do
      # The load's --duration includes its warm-up; the arm's set-up (a fresh
      # table, a CHECKPOINT, a server started) takes a few seconds before it.
      commit_probe_start "$out/lf$i-$arm.probe" $((latency_seconds + 8))
      case "$arm" in
        evpipe) evpipe_open "lf$i-evpipe" "$r" "$latency_seconds" ;;
        floor) floor_open "$out/lf$i-floor.json" "$out/lf$i-floor" "$r" "$latency_seconds" --warmup "$warmup" ;;
        tcp-floor) tcp_floor_open "lf$i-tcp-floor" "$r" "$latency_seconds" ;;
      esac
      commit_probe_wait "$out/lf$i-$arm.probe"
    done
    latency_row "lf$i" "$r" "${order// /, }" "lf$i-evpipe" "lf$i-floor" "lf$i-tcp-floor"
    e_p99+=("$(json_field "$out/lf$i-evpipe.json" "['latency_ms']['p99']")")
    f_p99+=("$(json_field "$out/lf$i-floor.json" "['latency_ms']['p99']")")
    t_p99+=("$(json_field "$out/lf$i-tcp-floor.json" "['latency_ms']['p99']")")
    e_p999+=("$(json_field "$out/lf$i-evpipe.json" "['latency_ms']['p99_9']")")
    f_p999+=("$(json_field "$out/lf$i-floor.json" "['latency_ms']['p99_9']")")
    e_max+=("$(json_field "$out/lf$i-evpipe.json" "['latency_ms']['max']")")
    f_max+=("$(json_field "$out/lf$i-floor.json" "['latency_ms']['max']")")
    [ -z "$(stall_seconds "$out/lf$i-floor.latency.csv")" ] && clean+=("$i")
    [ -z "$(probe_stalls "$out/lf$i-evpipe.probe")" ] && probe_clean+=("$i")
  done
  med() { printf '%s\n' "$@" | median | xargs printf '%.1f'; }
  local mf="$(med "${f_p99[@]}") / $(med "${f_p999[@]}") / $(med "${f_max[@]}")"
  local me="$(med "${e_p99[@]}") / $(med "${e_p999[@]}") / $(med "${e_max[@]}")"
  local rp99 rp999 rmax rtp99
  rp99=$(for i in "${!e_p99[@]}"; do ratio "${e_p99[$i]}" "${f_p99[$i]}"; echo; done | median)
  rp999=$(for i in "${!e_p99[@]}"; do ratio "${e_p999[$i]}" "${f_p999[$i]}"; echo; done | median)
  rmax=$(for i in "${!e_p99[@]}"; do ratio "${e_max[$i]}" "${f_max[$i]}"; echo; done | median)
  rtp99=$(for i in "${!e_p99[@]}"; do ratio "${e_p99[$i]}" "${t_p99[$i]}"; echo; done | median)
  lat_md="$lat_md
| median of $floor_runs (p99 / p99.9 / max) | $r | | $mf | $me | $rp99 | $rp999 | $rmax | | p99 $(med "${t_p99[@]}") | $rtp99 | | ${#clean[@]} runs without a floor stall: ${clean[*]:-none} | $([ "$probe_rate" = 0 ] && echo off || echo "${#probe_clean[@]} runs without a probe stall in evpipe's minute: ${probe_clean[*]:-none}") |"
}

latency() {
  local r
  r=$(latency_rate)
  warm_platform "$r"
  log "latency: $r events/s for $latency_seconds s ($warmup s warm-up left out), then the floor client"
  evpipe_open latency "$r" "$latency_seconds"
  floor_open "$out/latency-floor.json" "$out/latency-floor" "$r" "$latency_seconds" --warmup "$warmup"
  latency_row latency "$r" evpipe latency latency-floor
  local sent
  sent=$(json_field "$out/latency.json" "['sent']")
  rows_md="$rows_md
| latency ($r/s, ${latency_seconds} s) | $sent | $(printf '%.0f' "$(json_field "$out/latency.json" "['throughput']")") | | | | | | | | | $(json_field "$out/latency.json" "['latency_ms']['p50']") | $(json_field "$out/latency.json" "['latency_ms']['p99']") | $(json_field "$out/latency.json" "['latency_ms']['p99_9']") | $(json_field "$out/latency.json" "['latency_ms']['max']") |"
}

# The backlog drain through Mosquitto: no per-event latency (the messages
# waited in the broker by design), only the rate against psql \copy.
mqtt_drain_scenario() {
  log "mqtt-drain: $events messages preloaded in Mosquitto"
  [ -n "${MQTT_PID:-}" ] || mqtt_setup
  "$bin/load/evpipe-load" --emit "$scratch/mqtt-drain.ndjson" --emit-csv "$scratch/mqtt-drain.csv" --count "$events" \
    --run-id mqtt-drain 2>/dev/null
  local rows copy rate preload ceil one
  rows=$(wc -l <"$scratch/mqtt-drain.csv")
  copy=$(copy_rate "$scratch/mqtt-drain.csv" "$rows")
  ceil=$(floor_ceiling "$rows" "$shard_count")
  one=$(floor_ceiling "$rows" 1)
  read -r rate preload <<<"$(mqtt_drain "$scratch/mqtt-drain.ndjson" "$rows")"
  rows_md="$rows_md
| mqtt-drain (via Mosquitto) | $events | $rate | $copy | $(ratio "$rate" "$copy") | $ceil | $(ratio "$rate" "$ceil") | $one | $(ratio "$rate" "$one") | | | | | | |"
  log "mqtt-drain: evpipe $rate rows/s, psql \\copy $copy rows/s"
}

for s in "${scenarios[@]}"; do
  case "$s" in
    tcp-max) throughput tcp-max 0 0 ;;
    mqtt-drain) mqtt_drain_scenario ;;
    dlq-heavy) throughput dlq-heavy 0.1 0 ;;
    dup-heavy) throughput dup-heavy 0 0.2 ;;
    latency) latency ;;
    latency-floor) latency_floor ;;
  esac
done

# Plots: latency percentile distributions (HdrHistogram layout, log x axis)
# and acked events per second over time.
hdrs=() timelines=()
for s in "${scenarios[@]}" latency-floor lf1-evpipe lf1-floor; do
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
evpipe: shards $shard_count, route_by $route_by, selective_acks $selective_acks

$rows_md

Where the CPU went in the evpipe runs above (from /proc, over the load;
PostgreSQL is every process of its cluster, per row stored; the load
generator's user and system time): on a machine where all three share the
cores, the rate can at most be the cores divided by "all three".

$cpu_md

Latency, evpipe next to the floor client at the same rate (open loop, from each
event's intended send time to evpipe's ack or the floor's commit; the floor is
$shard_count libpq connections COPYing what is due and committing, no evpipe),
and in latency-floor runs next to the TCP floor too (the same evpipe-load
sending over TCP to perf/tcp_floor.cc, which reads, COPYs over $shard_count
connections, commits and acks; intended send time to ack, as for evpipe): the
TCP floor minus the floor client is what the sockets, the acks and the load
generator cost on this machine, evpipe minus the TCP floor is evpipe's own:

$lat_md

$warmup_md

Platform stalls: $stall_runs of $lat_runs latency runs had a second in which the
floor client itself kept a row waiting over $stall_ms ms (listed as second:max);
evpipe's figures from those runs say more about the machine than about evpipe.
$([ "$probe_rate" = 0 ] && echo "No commit probe ran (--probe-rate 0)." || echo "The floor client sees only its own minute: in latency-floor runs a commit probe
(pgbench, a one-row INSERT committed $probe_rate times a second) runs beside every arm,
and the seconds of the arm's measured window (after its warm-up) in which it waited
over $stall_ms ms are listed per arm, counted from the load's start as the latency
timelines are (to about a second): a stall there, in evpipe's minute, is the
platform's too.")
Latency over time (per second p99 and max: evpipe above the TCP floor, when run, and the floor):
$(for f in "$out"/latency-time-*.png; do [ -f "$f" ] && echo "![$(basename "$f" .png)]($(basename "$f"))"; done)

Throughput rows: the same events sent over 4 TCP connections as fast as evpipe
acks them (closed loop); psql \\copy loads the rows evpipe mirrors (valid, first
copy of each key) into a fresh events_mirror in the same run; the ceiling is
the floor client COPYing as many rows of the same mix over $shard_count streams
(one per shard, one COPY per stream) and over 1, as fast as PostgreSQL takes them; the TCP
floor takes the same events over the same 4 connections as evpipe (tcp-max only). Latency: open
loop at a constant rate, measured from each event's intended send time.

![latency](latency.png)
![rate](rate.png)
MD
echo
cat "$out/results.md"
log "results in $out"
