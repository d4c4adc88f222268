#!/usr/bin/env bash
# A soak: evpipe ingesting at a steady open-loop rate for M minutes while its
# memory is sampled, so that a creep (a leak, or an allocator that keeps what
# it once needed) shows as a slope rather than as one reading. Every S seconds
# a progress line: elapsed time, evpipe's RSS, its unacked events and the rows
# committed so far. At the end: RSS after the first minute (the warm-up: the
# dedup window's table, buffers, the allocator's pages) against the last
# sample, and the least-squares slope of RSS over the second half in KiB a
# minute. Keys are unique, so each shard's dedup window fills and then evicts
# once a shard has seen more keys than the window holds
# ([dedup] window_keys): a long enough run covers both.
# Starts and stops its own PostgreSQL. The samples: $scratch is removed on
# exit, so --out FILE keeps them (CSV: seconds, rss_kib, unacked, rows).
#
#   perf/soak.sh [--rate R] [--minutes M] [--sample-s S] [--connections C] [--out FILE]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rate=10000 minutes=5 sample_s=10 connections=4 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate="$2"; shift 2 ;;
    --minutes) minutes="$2"; shift 2 ;;
    --sample-s) sample_s="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --out) out="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$minutes" -ge 2 ] || die "--minutes must be at least 2 (the first minute is the warm-up)"

perf_setup 0
http_on
"$bin/app/evpipe" migrate --config "$scratch/evpipe.toml" 2>/dev/null
evpipe_start
# Reads the whole page (an early exit would fail the pipe under pipefail).
metric() { http_get "$http_port" /metrics | awk -v m="$1" 'index($0, m) == 1 {v = $2} END {print v}'; }

count=$((rate * 60 * minutes))
log "soak: $count events at $rate/s over $connections connections ($minutes min), a sample every ${sample_s} s"
"$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --count "$count" --connections "$connections" \
  --rate "$rate" --run-id soak --quiet >"$scratch/load.txt" 2>&1 &
loader=$!
samples="$scratch/soak.csv"
echo "seconds,rss_kib,unacked,rows" >"$samples"
t0=$(now)
while kill -0 "$loader" 2>/dev/null; do
  sleep "$sample_s"
  t=$(echo "$(now) - $t0" | bc -l | cut -d. -f1)
  rss=$(rss_kib) unacked=$(metric 'evpipe_unacked_events{source="tcp"}')
  rows=$(http_get "$http_port" /metrics | awk 'index($0, "evpipe_copy_rows_total{") == 1 {n += $2} END {printf "%d", n}')
  echo "$t,$rss,${unacked:-0},$rows" >>"$samples"
  log "$t s: RSS $rss KiB, unacked ${unacked:-0}, rows $rows"
done
wait "$loader" || die "evpipe-load failed: $(tail -3 "$scratch/load.txt")"
evpipe_stop
[ -z "$out" ] || cp "$samples" "$out"

echo "machine: $(machine_line)"
echo "load: $(grep -E 'throughput|latency' "$scratch/load.txt" | tr -s ' ' | paste -sd ';')"
awk -F, -v half=$((minutes * 30)) 'NR > 1 {
    if (!first && $1 >= 60) first = $2
    last = $2
    if ($1 >= half) { n++; sx += $1 / 60; sy += $2; sxx += ($1 / 60) ^ 2; sxy += ($1 / 60) * $2 }
  }
  END {
    slope = n > 1 ? (n * sxy - sx * sy) / (n * sxx - sx * sx) : 0
    printf "RSS after the first minute: %d KiB; at the end: %d KiB (%+d KiB)\n", first, last, last - first
    printf "RSS slope over the second half: %+.0f KiB a minute (%d samples)\n", slope, n
  }' "$samples"
