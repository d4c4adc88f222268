#!/usr/bin/env bash
# Platform settings A/B on the floor client: does a PostgreSQL or kernel
# setting shrink the tail of plain libpq COPY + commit here? For each setting,
# runs the floor client (open loop, one connection per shard) alternately with
# the baseline and with the setting, R times each (order A B B A A B ...), on a
# fresh events_mirror each time, and prints p99 / p99.9 / max and the seconds
# with a platform stall (see perf/lib.sh stall_seconds), with medians.
# PostgreSQL settings are set with ALTER SYSTEM + pg_reload_conf() on the
# private cluster; the kernel's writeback settings (vm.dirty_*) only as root,
# restored on exit.
#
#   perf/platform_ab.sh [--rate R] [--seconds S] [--runs R] [--out FILE] [setting ...]
#
# Settings (default: all):
#   wal-writer     wal_writer_delay = 10ms, wal_writer_flush_after = 0 (scripts/lib.sh sets these
#                  now, so its baseline arm sets PostgreSQL's defaults, 200ms and 1MB)
#   backend-flush  backend_flush_after = 256kB
#   no-flush-after checkpoint_flush_after = 0, bgwriter_flush_after = 0, wal_writer_flush_after = 0
#   writeback      vm.dirty_background_bytes = 16 MiB, vm.dirty_expire_centisecs = 500 (root only;
#                  perf_setup applies it for every perf script now, so its baseline arm is the
#                  machine's own values)
#   writeback-1s   the same, with dirty_expire_centisecs = 100 and the flusher every second
#                  (dirty_writeback_centisecs = 100); its baseline is perf_setup's (root only)
#   no-autovacuum  autovacuum = off (the launcher looks at each database once a minute; a vacuum or
#                  analyze of the table being loaded then runs beside the load)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rate=5000 seconds=15 runs=3 out="" settings=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    wal-writer|backend-flush|no-flush-after|writeback|writeback-1s|no-autovacuum) settings+=("$1"); shift ;;
    *) die "unknown setting or option $1 (see --help)" ;;
  esac
done
[ ${#settings[@]} -gt 0 ] || settings=(wal-writer backend-flush no-flush-after writeback)

perf_setup 0

# The kernel's writeback: perf_setup applies scripts/lib.sh's setting as root,
# so it is the baseline of every other A/B here; its own A/B takes the
# machine's values (saved by writeback_apply) as the baseline.

pg_set() { for kv in "$@"; do psqlq -c "ALTER SYSTEM SET ${kv%%=*} = '${kv#*=}'" >/dev/null; done; psqlq -c "SELECT pg_reload_conf()" >/dev/null; }
pg_reset() { psqlq -c "ALTER SYSTEM RESET ALL" -c "SELECT pg_reload_conf()" >/dev/null; }

apply() {
  case "$1" in
    wal-writer) pg_set wal_writer_delay=10ms wal_writer_flush_after=0 ;;
    backend-flush) pg_set backend_flush_after=256kB ;;
    no-flush-after) pg_set checkpoint_flush_after=0 bgwriter_flush_after=0 wal_writer_flush_after=0 ;;
    no-autovacuum) pg_set autovacuum=off ;;
    writeback) writeback_apply ;;
    writeback-1s) writeback_apply 16777216 100 100 ;;
  esac
  sleep 0.5  # the reload reaches every process
}
# The baseline arm: the cluster as scripts/lib.sh starts it, except where a
# setting is already part of that (then PostgreSQL's default).
apply_base() {
  case "$1" in
    wal-writer) pg_set wal_writer_delay=200ms wal_writer_flush_after=1MB; sleep 0.5 ;;
    writeback) writeback_restore ;;
  esac
}
undo() {
  case "$1" in
    writeback) ;;  # the "set" arm is perf_setup's state
    writeback-1s) writeback_apply ;;
    *) pg_reset ;;
  esac
}

one_run() {  # one_run SETTING ARM(base|set) RUN
  local n="$1-$2-$3"
  if [ "$2" = set ]; then apply "$1"; else apply_base "$1"; fi
  floor_open "$scratch/ab$n.json" "$scratch/ab$n" "$rate" "$seconds" --warmup 2
  if [ "$2" = set ]; then
    undo "$1"
  else
    pg_reset
    if [ "$1" = writeback ]; then writeback_apply; fi
  fi
  local stalls
  stalls=$(stall_seconds "$scratch/ab$n.latency.csv")
  echo "$(json_field "$scratch/ab$n.json" "['latency_ms']['p99']") $(json_field "$scratch/ab$n.json" "['latency_ms']['p99_9']") $(json_field "$scratch/ab$n.json" "['latency_ms']['max']") $(echo "$stalls" | wc -w)"
}

table="| setting | arm | runs: p99 / p99.9 / max ms (stall seconds) | median p99 | median p99.9 | median max | stall seconds (sum) |
|---|---|---|---|---|---|---|"
for s in "${settings[@]}"; do
  if [[ "$s" = writeback* ]] && [ "$(id -u)" -ne 0 ]; then
    log "writeback: needs root, left out"
    continue
  fi
  declare -A res=([base]="" [set]="")
  for r in $(seq "$runs"); do
    # A B, B A, A B, ...: neither arm always runs first.
    if [ $((r % 2)) -eq 1 ]; then order="base set"; else order="set base"; fi
    for arm in $order; do
      log "$s run $r: $arm"
      res[$arm]+="$(one_run "$s" "$arm" "$r")"$'\n'
    done
  done
  for arm in base set; do
    lines="$(printf '%s' "${res[$arm]}")"
    runs_txt=$(echo "$lines" | awk '{printf "%s%.1f / %.1f / %.1f (%d)", sep, $1, $2, $3, $4; sep="; "}')
    label=$([ "$arm" = base ] && echo "baseline" || echo "with $s")
    table="$table
| $s | $label | $runs_txt | $(echo "$lines" | awk '{print $1}' | median) | $(echo "$lines" | awk '{print $2}' | median) | $(echo "$lines" | awk '{print $3}' | median) | $(echo "$lines" | awk '{s+=$4} END {print s}') |"
  done
  unset res
done

report="floor client, $shard_count connections, $rate rows/s open loop for $seconds s (2 s warm-up), $runs runs per arm, alternating; stall = a second whose max > $stall_ms ms
machine: $(machine_line); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)

$table"
echo
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
