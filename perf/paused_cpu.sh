#!/usr/bin/env bash
# evpipe's CPU while its database is stopped and N TCP connections are
# paused for backpressure: what an outage costs the machine beside the
# database. A paused connection sleeps until its shard has room
# (router::wait_for_room); before, each polled every 2 ms.
#
#   perf/paused_cpu.sh [--connections "10 1000"] [--seconds S] [--binary PATH]
#
# For each N: evpipe (2 shards) takes a load of 20,000 events/s over N
# connections; after 4 s PostgreSQL is stopped with SIGSTOP (its sessions
# stay open, so nothing reconnects), and once evpipe has read nothing for a
# second (its queues are full, its connections paused) its CPU (user +
# system, /proc) is measured over S seconds (default 5);
# then PostgreSQL continues and the load must end with every event acked.
# --binary measures another evpipe build in an extra column.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

counts="10 1000" seconds=5 other_bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) counts="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --binary) other_bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup 2
echo "max_connections = 2048" >>"$scratch/evpipe.toml"  # into [[sources.tcp]], the last section
http_on
ulimit -n 8192

received() { http_get "$http_port" /metrics | awk '/^evpipe_events_received_total/ {s += $2} END {print s + 0}'; }

postgres_pids() {
  local pm; pm="$(head -1 "$PG_SCRATCH/data/postmaster.pid")"
  echo "$pm $(pgrep -P "$pm" | tr '\n' ' ')"
}

# paused_cores N BINARY: evpipe's cores while N connections wait out the stop.
paused_cores() {
  local n="$1" evbin="$2" pids t0 t1
  fresh_table
  evpipe_start "$evbin"
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --connections "$n" --rate 20000 \
    --duration $((seconds + 20)) --quiet >"$scratch/load.log" 2>&1 &
  local load=$!
  sleep 4
  pids="$(postgres_pids)"
  kill -STOP $pids
  # The queues fill and every connection pauses: evpipe reads nothing more.
  local before=-1 now
  for _ in $(seq 120); do
    sleep 1
    now="$(received)"
    [ "$now" = "$before" ] && break
    before="$now"
  done
  t0="$(awk '{print $14 + $15}' "/proc/$evpipe_pid/stat")"
  sleep "$seconds"
  t1="$(awk '{print $14 + $15}' "/proc/$evpipe_pid/stat")"
  kill -CONT $pids
  wait "$load" || die "the load did not finish: $(tail -3 "$scratch/load.log")"
  evpipe_stop
  awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v s="$seconds" 'BEGIN {printf "%.3f", d / hz / s}'
}

log "$(machine_line)"
echo
if [ -n "$other_bin" ]; then
  echo "| paused connections | evpipe cores | $other_bin cores |"
  echo "|---|---|---|"
else
  echo "| paused connections | evpipe cores |"
  echo "|---|---|"
fi
for n in $counts; do
  a="$(paused_cores "$n" "$bin/app/evpipe")"
  if [ -n "$other_bin" ]; then
    b="$(paused_cores "$n" "$other_bin")"
    echo "| $n | $a | $b |"
  else
    echo "| $n | $a |"
  fi
done
