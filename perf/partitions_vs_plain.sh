#!/usr/bin/env bash
# A partitioned events_mirror ([storage] partition = "day", docs/partitions.md)
# against the plain table, end to end through TCP: N events sent by
# evpipe-load over C connections, first send to last ack, into fresh tables
# each run; runs alternate plain / partitioned (and which goes first
# alternates) so that other load on the machine falls on both alike. Prints
# each run, the medians and partitioned/plain (the promise: >= 0.95), and
# for each layout PostgreSQL's CPU (all its processes, from /proc) and the
# WAL it wrote per event, start to last ack: the write's cost, which the
# machine's load does not change as much as the rate.
#
#   perf/partitions_vs_plain.sh [--events N] [--runs R] [--connections C] [--out FILE]
#                               [--with-key-index]
#
# --with-key-index: builds the index on evpipe_mirror_keys (created_at) that
# the key table had before 2026-12-02 (pruning went by it; now it sweeps),
# after migrate, to measure what that index costs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 runs=3 connections=4 payload=400 out="" with_key_index=0
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --with-key-index) with_key_index=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup 0
cp "$scratch/evpipe.toml" "$scratch/evpipe-plain.toml"
{ cat "$scratch/evpipe-plain.toml"; printf '[storage]\npartition = "day"\n'; } >"$scratch/evpipe-partitioned.toml"

log "generating $events events of ~$payload bytes"
"$bin/load/evpipe-load" --emit "$scratch/events.ndjson" --count "$events" --payload-bytes "$payload" \
  --run-id perf 2>/dev/null

one_run() {  # one_run plain|partitioned: prints events/s
  with_config "$1"
  # Both layouts' tables (a partitioned parent takes its partitions along).
  psqlq -c "DROP TABLE IF EXISTS events_mirror, dlq_events, evpipe_mirror_keys, evpipe_dlq_keys" -c "CHECKPOINT"
  "$bin/app/evpipe" migrate --config "$scratch/evpipe.toml" 2>/dev/null
  if [ "$1" = partitioned ] && [ "$with_key_index" = 1 ]; then
    psqlq -c "CREATE INDEX evpipe_mirror_keys_created_at ON evpipe_mirror_keys (created_at)"
  fi
  [ "$(psqlq -c "SELECT relkind FROM pg_class WHERE oid = 'events_mirror'::regclass")" = \
    "$([ "$1" = plain ] && echo r || echo p)" ] || die "$1: events_mirror has the wrong layout"
  local wal0 pg0 wal pg
  wal0="$(psqlq -c 'SELECT pg_current_wal_insert_lsn()')" pg0="$(cpu_mark | cut -d' ' -f3)"
  evpipe_start
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/events.ndjson" \
    --connections "$connections" --quiet --json "$scratch/load.json" >/dev/null
  wal="$(psqlq -c "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$wal0') / $events")"
  pg="$(echo "$pg0 $(cpu_mark | cut -d' ' -f3) $(getconf CLK_TCK) $events" | awk '{printf "%.2f", ($2 - $1) / $3 * 1e6 / $4}')"
  evpipe_stop
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$events" ] || die "$1: wrong events_mirror count"
  echo "$pg $wal" >>"$scratch/cost.$1"
  printf '%.0f' "$(json_field "$scratch/load.json" "['throughput']")"
}

alternate_pair "$runs" one_run plain partitioned events/s
plain=("${pair_a[@]}") part=("${pair_b[@]}")
m_plain=$(printf '%s\n' "${plain[@]}" | median)
m_part=$(printf '%s\n' "${part[@]}" | median)
report="$events events of ~$payload bytes, $connections connections, $runs alternating runs
plain:       ${plain[*]} events/s, median $m_plain
partitioned: ${part[*]} events/s, median $m_part
partitioned/plain: $(ratio "$m_part" "$m_plain")
PostgreSQL per event (medians): plain $(cut -d' ' -f1 "$scratch/cost.plain" | median) µs CPU, $(cut -d' ' -f2 "$scratch/cost.plain" | median | xargs printf '%.0f') B WAL; partitioned $(cut -d' ' -f1 "$scratch/cost.partitioned" | median) µs CPU, $(cut -d' ' -f2 "$scratch/cost.partitioned" | median | xargs printf '%.0f') B WAL
machine: $(machine_line)"
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
