#!/usr/bin/env bash
# Loads the same N events (about 400 bytes each) into a fresh events_mirror,
# once with `psql \copy` (PostgreSQL's raw bulk-load path) and once through
# evpipe over TCP, on the same machine in the same run, and prints both rates
# and their ratio. Repeats R times (alternating which goes first) and reports
# medians. Starts and stops its own PostgreSQL.
#
#   perf/copy_vs_evpipe.sh [--events N] [--runs R] [--connections C]
#                          [--payload-bytes B] [--shards S] [--binary PATH] [--out FILE]
#
# --binary runs another evpipe build in an extra column (e.g. one built with
# -DEVPIPE_USE_MIMALLOC=OFF), so two builds are compared side by side.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 runs=3 connections=4 payload=400 shards=0 other_bin="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --payload-bytes) payload="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    --binary) other_bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup "$shards"

log "generating $events events of ~$payload bytes"
"$bin/load/evpipe-load" --emit "$scratch/events.ndjson" --emit-csv "$scratch/events.csv" \
  --count "$events" --payload-bytes "$payload" --run-id perf 2>/dev/null
run_copy() { copy_rate "$scratch/events.csv" "$events"; }

# Rows/s through evpipe (first send to last ack, every ack after COMMIT).
run_evpipe() {
  fresh_table
  evpipe_start "$1"
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/events.ndjson" \
    --connections "$connections" --quiet --json "$scratch/load.json" >/dev/null
  evpipe_stop
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$events" ] || die "evpipe stored a wrong row count"
  printf '%.0f' "$(json_field "$scratch/load.json" "['throughput']")"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

copy_rates=() evpipe_rates=() other_rates=()
header="| run | psql \\copy rows/s | evpipe rows/s | ratio |"
other_label="$(basename "$(dirname "$(dirname "$other_bin")")")/$(basename "$other_bin")"
[ -n "$other_bin" ] && header="$header $other_label rows/s | ratio |"
table="$header"$'\n'"|---|---|---|---|"
[ -n "$other_bin" ] && table="$table---|---|"
for r in $(seq "$runs"); do
  if [ $((r % 2)) -eq 1 ]; then
    c=$(run_copy); e=$(run_evpipe "$bin/app/evpipe")
  else
    e=$(run_evpipe "$bin/app/evpipe"); c=$(run_copy)
  fi
  o=""
  [ -n "$other_bin" ] && o=$(run_evpipe "$other_bin")
  copy_rates+=("$c"); evpipe_rates+=("$e"); [ -n "$o" ] && other_rates+=("$o")
  row="| $r | $c | $e | $(awk -v a="$e" -v b="$c" 'BEGIN{printf "%.2f", a/b}') |"
  [ -n "$o" ] && row="$row $o | $(awk -v a="$o" -v b="$c" 'BEGIN{printf "%.2f", a/b}') |"
  table="$table"$'\n'"$row"
  log "run $r: psql \\copy $c rows/s, evpipe $e rows/s${o:+, other $o rows/s}"
done
mc=$(printf '%s\n' "${copy_rates[@]}" | median)
me=$(printf '%s\n' "${evpipe_rates[@]}" | median)
row="| median | $mc | $me | $(awk -v a="$me" -v b="$mc" 'BEGIN{printf "%.2f", a/b}') |"
if [ -n "$other_bin" ]; then
  mo=$(printf '%s\n' "${other_rates[@]}" | median)
  row="$row $mo | $(awk -v a="$mo" -v b="$mc" 'BEGIN{printf "%.2f", a/b}') |"
fi
table="$table"$'\n'"$row"

machine="$(machine_line)"
report="$events events of ~$payload bytes, $connections connections, shards=$shards (0 = one per core), $runs runs
machine: $machine

$table"
echo
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
