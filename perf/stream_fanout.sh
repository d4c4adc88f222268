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
#      rate (it must get every event; evpipe's peak RSS is sampled).
# Every client must receive every event once, in position order. Each row
# also has evpipe's CPU seconds (user + system, /proc/PID/stat) from the
# load's start to the last client's last event, and that per delivered event
# (per ingested event without clients), and the clients' own CPU seconds
# (they share the machine). EVPIPE_BIN=path runs another evpipe
# binary (a before/after comparison with the same clients and load);
# PHASES="name ..." runs only those phases.
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
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
count=$((rate * seconds))

# Only the three programs this needs (not the whole tree with its tests).
bin="$EVPIPE_ROOT/build"
[ -f "$bin/CMakeCache.txt" ] || cmake -S "$EVPIPE_ROOT" -B "$bin" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
log "building evpipe, evpipe-load and stream_fanout_client in $bin"
cmake --build "$bin" --target evpipe evpipe-load stream_fanout_client >"$bin/stream_fanout_build.log" 2>&1 ||
  die "build failed (log: $bin/stream_fanout_build.log)"
scratch_cluster
writeback_apply  # as root; restored on exit (scripts/lib.sh)
psqlq -d postgres -c "ALTER SYSTEM SET track_commit_timestamp = on" >/dev/null
as_pg_user "$PG_BIN/pg_ctl" -D "$PG_SCRATCH/data" -l "$PG_SCRATCH/postgres.log" -w restart >/dev/null
[ "$(psqlq -c 'SHOW track_commit_timestamp')" = on ] || die "track_commit_timestamp is not on"

tcp_port="$(free_port)" stream_port="$(free_port)"
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
    for _ in $(seq 600); do [ -s "$scratch/$name.ready" ] && break; sleep 0.1; done
    [ "$(cat "$scratch/$name.ready" 2>/dev/null)" = "$n" ] || die "$name: only $(cat "$scratch/$name.ready" 2>/dev/null) of $n clients subscribed"
  fi
  cpu0=$(cpu_s)
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --rate "$load_rate" --count "$count" \
    --payload-bytes "$payload" --connections 2 --run-id "$name" --quiet --json "$scratch/$name.json" >/dev/null
  ingest=$(printf '%.0f' "$(json_field "$scratch/$name.json" "['throughput']")")
  delivered="-" lat="-" client_cpu="-"
  if [ -n "$client_pid" ]; then
    wait "$client_pid" || die "$name: a client did not get every event once in order: $(grep -v "events $count in_order 1" "$scratch/$name.clients" | head -3)
evpipe (running: $(kill -0 "$evpipe_pid" 2>/dev/null && echo yes || echo no)): $(tail -5 "$scratch/evpipe.log")"
    delivered="$n x $count, in order"
    client_cpu=$(awk '/^clients cpu_s/{print $3}' "$scratch/$name.clients")
    lat="all clients (tx's last event): $(latency_ms "$scratch/$name.pertx"); client 0 (exact): $(awk '{print $0, 1}' "$scratch/$name.events" >"$scratch/$name.events1"; latency_ms "$scratch/$name.events1")"
  fi
  # From the load's start to the last client's last event: evpipe's CPU
  # seconds, and per event delivered to a client (per event ingested
  # without clients); the stream's share is the difference to no-client.
  cpu1=$(cpu_s)
  cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b - a}')
  per_event=$(awk -v c="$cpu" -v n="$n" -v e="$count" 'BEGIN{printf "%.2f", c * 1e6 / (e * (n > 0 ? n : 1))}')
  rss=$(rss_max_mb)
  evpipe_stop
  log "$name: ingest $ingest ev/s, clients $delivered, $lat, evpipe CPU $cpu s ($per_event us/event), clients' CPU $client_cpu s, peak RSS $rss MB"
  rows="$rows"$'\n'"| $name | $n | $load_rate | $ingest | $delivered | $lat | $cpu | $per_event | $client_cpu | $rss |"
}

rows="| phase | clients | offered ev/s | ingest ev/s | delivered | commit→client latency | evpipe CPU s | evpipe CPU µs per delivered (ingested) event | clients' CPU s | evpipe peak RSS MB |"$'\n'"|---|---|---|---|---|---|---|---|---|---|"
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

report="stream fan-out: $count events of ~$payload bytes per phase, $shards shards, TCP source (2 connections)
machine: $(machine_line); shared with other builds while measured
$rows"
echo
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
