#!/usr/bin/env bash
# Sizing figures for docs/operations.md, measured on this machine:
#  1. memory per in-flight event: evpipe's RSS with N events read but not
#     committed (a side session holds an exclusive lock on events_mirror, so
#     every shard waits in its COPY), minus its RSS idle after a warm-up of
#     the same size, divided by N;
#  2. evpipe's CPU per event: its user + system time (/proc) over N events
#     loaded closed loop, as events/s per core of evpipe's own CPU (PostgreSQL
#     and the load generator run on the same cores and are not counted).
# Starts and stops its own PostgreSQL.
#
#   perf/sizing.sh [--events N] [--connections C]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=100000 connections=4
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup 0
http_on
"$bin/app/evpipe" migrate --config "$scratch/evpipe.toml" 2>/dev/null
evpipe_start
cpu_ticks() { awk '{print $14 + $15}' "/proc/$evpipe_pid/stat"; }
load() {  # load RUN_ID: N events, closed loop, waits for every ack
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --count "$events" --connections "$connections" \
    --rate max --run-id "$1" --quiet >/dev/null
}
unacked() { http_get "$http_port" /metrics | awk '/^evpipe_unacked_events\{source="tcp"\}/{print $2}'; }

# Warm-up: the same number of events through every buffer once.
load warm
sleep 1
idle=$(rss_kib)

# N events in flight: reads until they are all unacked, then holds.
psqlq -c "SELECT 1" >/dev/null
( psqlq -c "BEGIN; LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30); COMMIT;" >/dev/null 2>&1 ) &
locker=$!
sleep 0.5
load held &
loader=$!
for _ in $(seq 200); do
  [ "$(unacked)" = "$events" ] && break
  sleep 0.1
done
held_unacked=$(unacked)
sleep 1
loaded=$(rss_kib)
kill "$locker" 2>/dev/null || true
psqlq -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()" >/dev/null
wait "$loader"

# CPU per event, closed loop.
t0=$(now); c0=$(cpu_ticks)
load cpu
t1=$(now); c1=$(cpu_ticks)
evpipe_stop
hz=$(getconf CLK_TCK)

echo "machine: $(machine_line)"
echo "events in flight: $held_unacked (of $events, $connections connections)"
echo "RSS idle after warm-up: $idle KiB; with the events in flight: $loaded KiB"
awk -v a="$idle" -v b="$loaded" -v n="$held_unacked" 'BEGIN {printf "memory per in-flight event: %.0f bytes\n", (b - a) * 1024 / n}'
awk -v c="$((c1 - c0))" -v hz="$hz" -v n="$events" -v t="$(echo "$t1 - $t0" | bc -l)" \
  'BEGIN {s = c / hz; printf "evpipe CPU: %.2f s for %d events in %.2f s (%.0f events/s): %.2f us per event, %.0f events/s per core of evpipe CPU\n", s, n, t, n / t, s * 1e6 / n, n / s}'
