#!/usr/bin/env bash
# The read rate of the stream's catch-up and of `evpipe replay` against
# `psql \copy (SELECT ... ORDER BY tx, id) TO STDOUT` of the same rows (the
# issue's target: at least 0.8 of psql), side by side in one run:
#   - psql:    \copy (SELECT tx, id, topic, payload, created_at FROM events_mirror
#              WHERE tx < horizon ORDER BY tx, id) TO STDOUT, to /dev/null;
#   - replay:  evpipe replay --no-progress (NDJSON) to /dev/null;
#   - catchup: one SSE client (curl) of a running evpipe asking for every row
#              from the start (`since` = the first position) until its
#              `caught_up`; the rows it was handed are checked with
#              _stream_events_delivered_total (it must grow by exactly N).
# Each run measures all three, rotating which goes first; rows/s, ratios to
# psql, and the medians. Starts and stops its own PostgreSQL.
# EVPIPE_BIN=path runs another evpipe binary (a before/after comparison).
#
#   perf/catchup_vs_copy.sh [--events N] [--runs R] [--payload-bytes B] [--out FILE]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=300000 runs=3 payload=400 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --payload-bytes) payload="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup 0
evbin="${EVPIPE_BIN:-$bin/app/evpipe}"
log "generating and loading $events events of ~$payload bytes"
"$bin/load/evpipe-load" --emit "$scratch/events.ndjson" --emit-csv "$scratch/events.csv" \
  --count "$events" --payload-bytes "$payload" --run-id perf 2>/dev/null
copy_rate "$scratch/events.csv" "$events" >/dev/null
psqlq -c "VACUUM ANALYZE events_mirror"

# The running evpipe serves the stream (and /metrics, to count what it handed over).
stream_port="$(free_port)"
http_on
printf '[metrics]\nprefix = "perf"\n[stream]\nlisten = "127.0.0.1:%s"\n' "$stream_port" >>"$scratch/evpipe.toml"
evpipe_start "$evbin"
trap '[ -n "${evpipe_pid:-}" ] && kill "$evpipe_pid" 2>/dev/null; cleanup_scratch' EXIT

rate() { echo "$1 $2 $3" | awk '{printf "%.0f", $1 / ($3 - $2)}'; }
delivered() {
  http_get "$http_port" /metrics | awk '$1 == "perf_stream_events_delivered_total" {print $2}'
}
run_psql() {
  local t0 t1
  t0=$(now)
  psqlq -c "\\copy (SELECT tx, id, topic, payload, created_at FROM events_mirror WHERE tx < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx, id) TO STDOUT" >/dev/null
  t1=$(now)
  rate "$events" "$t0" "$t1"
}
run_replay() {
  local t0 t1
  t0=$(now)
  "$evbin" replay --config "$scratch/evpipe.toml" --no-progress >/dev/null 2>"$scratch/replay.err"
  t1=$(now)
  grep -q "last position: 1-" "$scratch/replay.err" || die "replay failed: $(tail -2 "$scratch/replay.err")"
  rate "$events" "$t0" "$t1"
}
# curl (Debian's, as in StreamSse.CurlReceivesCommittedEvents; it only
# reads evpipe's stream on loopback) writes the stream into a pipe; grep -F finds caught_up (it searches
# blocks, not lines, so it keeps up), then curl is stopped.
run_catchup() {
  local t0 t1 before after fifo="$scratch/sse.fifo" curl_pid
  before=$(delivered)
  rm -f "$fifo" && mkfifo "$fifo"
  t0=$(now)
  curl -sN --max-time 600 -H 'Accept: text/event-stream' \
    "http://127.0.0.1:$stream_port/v1/stream?since=1-00000000000000000000000000000000" >"$fifo" &
  curl_pid=$!
  grep -F -m1 -q 'event: caught_up' <"$fifo" || die "no caught_up from the stream"
  t1=$(now)
  kill "$curl_pid" 2>/dev/null || true
  wait "$curl_pid" 2>/dev/null || true
  after=$(delivered)
  [ "$((after - before))" -eq "$events" ] || die "the catch-up handed over $((after - before)) events, not $events"
  rate "$events" "$t0" "$t1"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

p_rates=() e_rates=() c_rates=() e_ratios=() c_ratios=()
table="| run | order | psql \\copy rows/s | evpipe replay rows/s | ratio | stream catch-up rows/s | ratio |"$'\n'"|---|---|---|---|---|---|---|"
orders=("psql replay catchup" "replay catchup psql" "catchup psql replay")
for r in $(seq "$runs"); do
  order="${orders[$(((r - 1) % 3))]}"
  for what in $order; do
    case "$what" in
      psql) p=$(run_psql) ;;
      replay) e=$(run_replay) ;;
      catchup) c=$(run_catchup) ;;
    esac
  done
  p_rates+=("$p") e_rates+=("$e") c_rates+=("$c")
  e_ratios+=("$(ratio "$e" "$p")") c_ratios+=("$(ratio "$c" "$p")")
  table="$table"$'\n'"| $r | ${order// /, } | $p | $e | $(ratio "$e" "$p") | $c | $(ratio "$c" "$p") |"
  log "run $r ($order): psql \\copy $p rows/s, replay $e rows/s, catch-up $c rows/s"
done
mp=$(printf '%s\n' "${p_rates[@]}" | median)
me=$(printf '%s\n' "${e_rates[@]}" | median)
mc=$(printf '%s\n' "${c_rates[@]}" | median)
table="$table"$'\n'"| median | | $mp | $me | $(printf '%s\n' "${e_ratios[@]}" | median) | $mc | $(printf '%s\n' "${c_ratios[@]}" | median) |"
evpipe_stop
report="$events rows of ~$payload-byte events read back, $runs runs (ratios: to psql in the same run; median row: medians of the rates and of the per-run ratios)
machine: $(machine_line), load average $(cut -d' ' -f1-3 /proc/loadavg)

$table"
echo
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
