#!/usr/bin/env bash
# Reads the same N rows back out of events_mirror, once with `evpipe replay`
# (NDJSON to /dev/null) and once with `psql \copy (SELECT ... ORDER BY tx, id)
# TO STDOUT` (the same rows, the same order, below the same horizon), on the
# same machine in the same run; repeats R times alternating which goes first,
# prints both rates and their ratio, and the medians. Starts and stops its own
# PostgreSQL.
#
#   perf/replay_vs_copy.sh [--events N] [--runs R] [--payload-bytes B] [--out FILE]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=300000 runs=5 payload=400 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --payload-bytes) payload="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup 0
log "generating and loading $events events of ~$payload bytes"
"$bin/load/evpipe-load" --emit "$scratch/events.ndjson" --emit-csv "$scratch/events.csv" \
  --count "$events" --payload-bytes "$payload" --run-id perf 2>/dev/null
copy_rate "$scratch/events.csv" "$events" >/dev/null
psqlq -c "VACUUM ANALYZE events_mirror"

rate() { echo "$1 $2 $3" | awk '{printf "%.0f", $1 / ($3 - $2)}'; }
run_replay() {
  local t0 t1
  t0=$(now)
  "$bin/app/evpipe" replay --config "$scratch/evpipe.toml" --no-progress >/dev/null 2>"$scratch/replay.err"
  t1=$(now)
  grep -q "last position: 1-" "$scratch/replay.err" || die "replay failed: $(tail -2 "$scratch/replay.err")"
  rate "$events" "$t0" "$t1"
}
run_psql() {
  local t0 t1
  t0=$(now)
  psqlq -c "\\copy (SELECT tx, id, topic, payload, created_at FROM events_mirror WHERE tx < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx, id) TO STDOUT" >/dev/null
  t1=$(now)
  rate "$events" "$t0" "$t1"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

replay_rates=() psql_rates=()
table="| run | psql \\copy rows/s | evpipe replay rows/s | ratio |"$'\n'"|---|---|---|---|"
for r in $(seq "$runs"); do
  if [ $((r % 2)) -eq 1 ]; then p=$(run_psql); e=$(run_replay); else e=$(run_replay); p=$(run_psql); fi
  psql_rates+=("$p"); replay_rates+=("$e")
  table="$table"$'\n'"| $r | $p | $e | $(awk -v a="$e" -v b="$p" 'BEGIN{printf "%.2f", a/b}') |"
  log "run $r: psql \\copy $p rows/s, evpipe replay $e rows/s"
done
mp=$(printf '%s\n' "${psql_rates[@]}" | median)
me=$(printf '%s\n' "${replay_rates[@]}" | median)
table="$table"$'\n'"| median | $mp | $me | $(awk -v a="$me" -v b="$mp" 'BEGIN{printf "%.2f", a/b}') |"
report="$events rows of ~$payload-byte events read back, $runs runs
machine: $(machine_line)

$table"
echo
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
