#!/usr/bin/env bash
# The live stream under load, side by side in one run (own PostgreSQL with
# track_commit_timestamp = on, so that commit-to-client latency is measured
# from PostgreSQL's commit time to the client's receive time, same host):
#   1. paced RATE events/s to the TCP source: no stream client, then CLIENTS
#      WebSocket clients subscribed to everything (commit-to-client latency,
#      ingest rate), then one client with wake_on_commit = false and true
#      (the wake's before/after);
#   2. ingest at full speed (evpipe-load --rate max): no client, CLIENTS
#      clients, and one client reading SLOW times slower than that ingest
#      rate (it must get every event; evpipe's peak RSS is sampled);
#   3. the fan-out's floor (build/perf/fanout-floor, perf/fanout_floor.cc):
#      the same CLIENTS clients fed RATE events/s of the same size by one
#      thread with no database, alone and then beside evpipe ingesting RATE
#      events/s with no stream client (the rest of the paced phase's work).
#      Its latency is from each event's intended send time to the client's
#      receive, which includes up to FLOOR_TICK_US (default 1000) of waiting
#      for its tick; the clients record it in a histogram as they receive
#      (--position-time), not per transaction as for evpipe;
#   4. the floor with the table read (fanout-floor --dsn): beside the same
#      ingest, it reads the rows evpipe commits from events_mirror every
#      FLOOR_TICK_US (the stream's tail read, minimal) and writes them to the
#      clients; commit-to-client latency as for evpipe. Then the same beside
#      the ingest's floor instead of evpipe (build/perf/floor-client: two
#      libpq connections COPYing RATE rows/s, nothing else): no evpipe at all.
# Every client must receive every event once, in position order. Each row
# also has evpipe's CPU seconds (user + system, /proc/PID/stat) from the
# load's start to the last client's last event, and that per delivered event
# (per ingested event without clients), the clients' own CPU seconds
# (they share the machine), and the whole machine's busy CPU seconds over
# the same span, with the load generator's own (evpipe-load's, or
# floor-client's) in brackets. EVPIPE_BIN=path runs another evpipe
# binary (a before/after comparison with the same clients and load);
# STREAM_EXTRA="key = value" adds lines to the [stream] section (a setting's
# A/B); PHASES="name ..." runs only those phases; METRICS_OUT=PREFIX keeps
# evpipe's /v1/metrics at the end of each evpipe phase in PREFIX.PHASE.
#
#   perf/stream_fanout.sh [--clients N] [--rate R] [--seconds S] [--payload-bytes B]
#                         [--shards K] [--slow-factor F] [--out FILE]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

clients=100 rate=20000 seconds=15 payload=200 shards=2 slow=10 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) clients="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --payload-bytes) payload="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    --slow-factor) slow="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/{exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
count=$((rate * seconds))

# Only the programs this needs (not the whole tree with its tests).
bin="$EVPIPE_ROOT/build"
[ -f "$bin/CMakeCache.txt" ] || cmake -S "$EVPIPE_ROOT" -B "$bin" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
log "building evpipe, evpipe-load, stream_fanout_client, fanout-floor and floor-client in $bin"
cmake --build "$bin" --target evpipe evpipe-load stream_fanout_client fanout-floor floor-client >"$bin/stream_fanout_build.log" 2>&1 ||
  die "build failed (log: $bin/stream_fanout_build.log)"
scratch_cluster
writeback_apply  # as root; restored on exit (scripts/lib.sh)
psqlq -d postgres -c "ALTER SYSTEM SET track_commit_timestamp = on" >/dev/null
as_pg_user "$PG_BIN/pg_ctl" -D "$PG_SCRATCH/data" -l "$PG_SCRATCH/postgres.log" -w restart >/dev/null
[ "$(psqlq -c 'SHOW track_commit_timestamp')" = on ] || die "track_commit_timestamp is not on"

tcp_port="$(free_port)" stream_port="$(free_port)" floor_port="$(free_port)"
write_config() {  # wake_on_commit
  cat >"$scratch/evpipe.toml" <<CONF
[pipeline]
shards = $shards
[postgres]
dsn = "$EVPIPE_DSN"
[http]
listen = ""
[stream]
listen = "127.0.0.1:$stream_port"
max_clients = $((clients + 8))
wake_on_commit = $1
${STREAM_EXTRA:-}
[log]
level = "warn"
[[sources.tcp]]
listen = "127.0.0.1:$tcp_port"
topic = "perf/stream"
CONF
}

# rss_sampler: evpipe's resident set every 100 ms into $scratch/rss (kB).
rss_start() {
  : >"$scratch/rss"
  (while kill -0 "$evpipe_pid" 2>/dev/null; do
     awk '/^VmRSS/{print $2}' "/proc/$evpipe_pid/status" 2>/dev/null >>"$scratch/rss" || true
     sleep 0.1
   done) &
  rss_pid=$!
}
# evpipe's CPU time (user + system, all threads) in seconds, from /proc.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$evpipe_pid/stat"; }
rss_max_mb() { kill "$rss_pid" 2>/dev/null; wait "$rss_pid" 2>/dev/null || true; sort -n "$scratch/rss" | tail -1 | awk '{printf "%.0f", $1/1024}'; }

# Percentiles (ms) of recv_us - commit time, weighted by count: FILE has "tx recv_us count".
latency_ms() {
  psqlq <<SQL
CREATE TEMP TABLE r (tx text, recv_us bigint, n bigint);
\\copy r FROM '$1' WITH (FORMAT text, DELIMITER ' ')
WITH l AS (
  SELECT (recv_us - extract(epoch FROM pg_xact_commit_timestamp(tx::xid)) * 1e6) / 1000.0 AS ms, n FROM r
), c AS (
  SELECT ms, sum(n) OVER (ORDER BY ms) AS cum, sum(n) OVER () AS total FROM l
)
SELECT format('p50 %s ms, p99 %s ms, max %s ms',
  round((SELECT min(ms) FROM c WHERE cum >= 0.50 * total)::numeric, 2),
  round((SELECT min(ms) FROM c WHERE cum >= 0.99 * total)::numeric, 2),
  round((SELECT max(ms) FROM c)::numeric, 2));
SQL
}

# wait_ready NAME N: until the clients say all N are subscribed (caught_up).
wait_ready() {
  for _ in $(seq 600); do [ -s "$scratch/$1.ready" ] && break; sleep 0.1; done
  [ "$(cat "$scratch/$1.ready" 2>/dev/null)" = "$2" ] || die "$1: only $(cat "$scratch/$1.ready" 2>/dev/null) of $2 clients subscribed"
}
# load NAME RATE: evpipe-load sends $count events to the TCP source; sets
# $ingest (ev/s) and $load_cpu (its CPU seconds).
load() {
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --rate "$2" --count "$count" \
    --payload-bytes "$payload" --connections 2 --run-id "$1" --quiet --json "$scratch/$1.json" >/dev/null
  ingest=$(printf '%.0f' "$(json_field "$scratch/$1.json" "['throughput']")")
  load_cpu=$(printf '%.2f' "$(json_field "$scratch/$1.json" "['cpu_seconds']")")
}
# The whole machine's busy CPU seconds so far (every core and process: user,
# nice, system, irq, softirq, steal), from /proc/stat.
busy_s() { awk -v hz="$(getconf CLK_TCK)" '/^cpu /{printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit}' /proc/stat; }

# phase NAME CLIENTS LOAD_RATE [READ_RATE]: fresh table, evpipe, clients
# subscribed (all caught up) before the load starts; the load's figures go
# to $scratch/NAME.json, the clients' to $scratch/NAME.*.
phase() {
  local name="$1" n="$2" load_rate="$3" read_rate="${4:-0}" client_pid="" timeout
  # PHASES="paced-100-clients ..." runs only those (the others are skipped).
  if [ -n "${PHASES:-}" ] && [[ " $PHASES " != *" $name "* ]]; then return 0; fi
  fresh_table
  evpipe_start "${EVPIPE_BIN:-$bin/app/evpipe}"
  rss_start
  if [ "$n" -gt 0 ]; then
    timeout=$((seconds * 30 + 120))
    [ "$read_rate" != 0 ] && timeout=$(awk -v c="$count" -v r="$read_rate" 'BEGIN{printf "%d", c / r + 120}')
    rm -f "$scratch/$name.ready"
    # CLIENT_NICE=N runs the clients at that nice value (they share the
    # machine's cores with evpipe and PostgreSQL; real clients would not).
    nice -n "${CLIENT_NICE:-0}" "$bin/bench/stream_fanout_client" --port "$stream_port" --clients "$n" --expect "$count" --read-rate "$read_rate" \
      --timeout "$timeout" --ready-file "$scratch/$name.ready" --per-tx "$scratch/$name.pertx" \
      --events "$scratch/$name.events" >"$scratch/$name.clients" 2>&1 &
    client_pid=$!
    wait_ready "$name" "$n"
  fi
  cpu0=$(cpu_s) busy0=$(busy_s)
  load "$name" "$load_rate"
  delivered="-" lat="-" client_cpu="-"
  if [ -n "$client_pid" ]; then
    wait "$client_pid" || die "$name: a client did not get every event once in order: $(grep -v "events $count in_order 1" "$scratch/$name.clients" | head -3)
evpipe (running: $(kill -0 "$evpipe_pid" 2>/dev/null && echo yes || echo no)): $(tail -5 "$scratch/evpipe.log")"
    delivered="$n x $count, in order"
    client_cpu=$(awk '/^clients cpu_s/{print $3}' "$scratch/$name.clients")
    lat="all clients (tx's last event): $(latency_ms "$scratch/$name.pertx"); client 0 (exact): $(awk '{print $0, 1}' "$scratch/$name.events" >"$scratch/$name.events1"; latency_ms "$scratch/$name.events1")"
  fi
  # METRICS_OUT=PREFIX: the stream's own view (commit_to_send: commit to the
  # write to a socket) beside the clients' (commit to receive), in PREFIX.NAME.
  if [ -n "${METRICS_OUT:-}" ]; then
    curl -s "http://127.0.0.1:$stream_port/v1/metrics" >"$METRICS_OUT.$name" || log "could not read /v1/metrics"
  fi
  # From the load's start to the last client's last event: evpipe's CPU
  # seconds, and per event delivered to a client (per event ingested
  # without clients); the stream's share is the difference to no-client.
  cpu1=$(cpu_s)
  cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b - a}')
  machine=$(awk -v a="$busy0" -v b="$(busy_s)" 'BEGIN{printf "%.2f", b - a}')
  per_event=$(awk -v c="$cpu" -v n="$n" -v e="$count" 'BEGIN{printf "%.2f", c * 1e6 / (e * (n > 0 ? n : 1))}')
  rss=$(rss_max_mb)
  evpipe_stop
  log "$name: ingest $ingest ev/s, clients $delivered, $lat, evpipe CPU $cpu s ($per_event us/event), clients' CPU $client_cpu s, evpipe-load's CPU $load_cpu s, the machine's $machine s, peak RSS $rss MB"
  rows="$rows"$'\n'"| $name | $n | $load_rate | $ingest | $delivered | $lat | $cpu | $per_event | $client_cpu | $machine ($load_cpu) | $rss |"
}

# floor_phase NAME CLIENTS BESIDE_INGEST(0|1|read|read-libpq): the fan-out
# floor serves the clients RATE events/s; with 1, evpipe ingests RATE
# events/s (fresh table, no stream client) at the same time; with read, the
# same, and the floor's events are the rows that ingest commits
# (fanout-floor --dsn); with read-libpq, the rows floor-client commits, and
# no evpipe runs. Same row format as phase().
floor_phase() {
  local name="$1" n="$2" beside="$3" floor_pid client_pid ingest="-" cpu="-" source clock busy0 machine load_cpu="-"
  if [ -n "${PHASES:-}" ] && [[ " $PHASES " != *" $name "* ]]; then return 0; fi
  if [ "$beside" != 0 ]; then fresh_table; fi
  if [ "$beside" = 1 ] || [ "$beside" = read ]; then evpipe_start "${EVPIPE_BIN:-$bin/app/evpipe}"; fi
  if [ "$beside" = read ] || [ "$beside" = read-libpq ]; then
    source=(--dsn "$EVPIPE_DSN")
    clock=(--per-tx "$scratch/$name.pertx" --events "$scratch/$name.events")
  else
    source=(--rate "$rate" --payload-bytes "$payload")
    clock=(--position-time 1)
  fi
  # Bounded like the clients: a floor whose clients never come does not wait for ever.
  timeout "$((seconds * 30 + 180))" "$bin/perf/fanout-floor" --port "$floor_port" --clients "$n" --count "$count" \
    --tick-us "${FLOOR_TICK_US:-1000}" "${source[@]}" >"$scratch/$name.floor" 2>&1 &
  floor_pid=$!
  for _ in $(seq 50); do ss -ltn "sport = :$floor_port" | grep -q LISTEN && break; sleep 0.1; done
  rm -f "$scratch/$name.ready"
  nice -n "${CLIENT_NICE:-0}" "$bin/bench/stream_fanout_client" --port "$floor_port" --clients "$n" --expect "$count" \
    --timeout "$((seconds * 30 + 120))" --ready-file "$scratch/$name.ready" "${clock[@]}" \
    >"$scratch/$name.clients" 2>&1 &
  client_pid=$!
  busy0=$(busy_s)  # without a load: from the clients' start
  if [ "$beside" = read-libpq ]; then
    wait_ready "$name" "$n"
    busy0=$(busy_s)
    "$bin/perf/floor-client" --dsn "$EVPIPE_DSN" --connections 2 --rate "$rate" --count "$count" \
      --payload-bytes "$payload" --run-id "$name" --quiet --json "$scratch/$name.json" >/dev/null
    ingest=$(printf '%.0f' "$(json_field "$scratch/$name.json" "['throughput']")")
    load_cpu=$(printf '%.2f' "$(json_field "$scratch/$name.json" "['cpu_seconds']")")
  elif [ "$beside" != 0 ]; then
    wait_ready "$name" "$n"
    cpu0=$(cpu_s) busy0=$(busy_s)
    load "$name" "$rate"
  fi
  wait "$client_pid" || die "$name: a client did not get every event once in order: $(grep -v "events $count in_order 1" "$scratch/$name.clients" | head -3)"
  wait "$floor_pid" || die "$name: fanout-floor failed: $(tail -3 "$scratch/$name.floor")"
  machine=$(awk -v a="$busy0" -v b="$(busy_s)" 'BEGIN{printf "%.2f", b - a}')
  if [ "$beside" = 1 ] || [ "$beside" = read ]; then
    cpu=$(awk -v a="$cpu0" -v b="$(cpu_s)" 'BEGIN{printf "%.2f", b - a}')
    evpipe_stop
  fi
  local floor_cpu client_cpu per_delivery
  floor_cpu=$(awk '/^fanout-floor events/{print $NF}' "$scratch/$name.floor")
  client_cpu=$(awk '/^clients cpu_s/{print $3}' "$scratch/$name.clients")
  per_delivery=$(awk -v c="$floor_cpu" -v n="$n" -v e="$count" 'BEGIN{printf "%.2f", c * 1e6 / (e * n)}')
  if [ "$beside" = read ] || [ "$beside" = read-libpq ]; then
    clock="commit→client all clients (tx's last event): $(latency_ms "$scratch/$name.pertx"); client 0 (exact): $(awk '{print $0, 1}' "$scratch/$name.events" >"$scratch/$name.events1"; latency_ms "$scratch/$name.events1")"
  else
    clock="intended→client $(awk '/^latency all/{printf "all clients: p50 %s ms, p99 %s ms, max %s ms; client 0: p50 %s ms, p99 %s ms, max %s ms", $4, $6, $8, $11, $13, $15}' "$scratch/$name.clients")"
  fi
  log "$name: fanout-floor, clients $n x $count, in order, $clock, floor CPU $floor_cpu s ($per_delivery us/delivery), ingest $ingest ev/s (evpipe CPU $cpu s), clients' CPU $client_cpu s, the load's CPU $load_cpu s, the machine's $machine s"
  rows="$rows"$'\n'"| $name | $n | $rate | $ingest | $n x $count, in order | (floor) $clock | floor $floor_cpu (evpipe $cpu) | floor $per_delivery | $client_cpu | $machine ($load_cpu) | - |"
}

rows="| phase | clients | offered ev/s | ingest ev/s | delivered | commit→client latency | evpipe CPU s | evpipe CPU µs per delivered (ingested) event | clients' CPU s | the machine's CPU s (the load's: evpipe-load or floor-client) | evpipe peak RSS MB |"$'\n'"|---|---|---|---|---|---|---|---|---|---|---|"
ingest=0
write_config true
phase "paced-no-client" 0 "$rate"
phase "paced-$clients-clients" "$clients" "$rate"
write_config false
phase "paced-1-client-poll-only" 1 "$rate"
write_config true
phase "paced-1-client-wake" 1 "$rate"
phase "max-no-client" 0 max
max_rate="$ingest"
phase "max-$clients-clients" "$clients" max
phase "max-1-client-${slow}x-slower" 1 max "$(awk -v r="$max_rate" -v f="$slow" 'BEGIN{printf "%d", r / f}')"
write_config true
floor_phase "floor-$clients-clients" "$clients" 0
floor_phase "floor-$clients-clients-beside-ingest" "$clients" 1
floor_phase "read-floor-$clients-clients-beside-ingest" "$clients" read
floor_phase "read-floor-$clients-clients-beside-libpq-ingest" "$clients" read-libpq

report="stream fan-out: $count events of ~$payload bytes per phase, $shards shards, TCP source (2 connections)
machine: $(machine_line); shared with other builds while measured
$rows"
echo
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
