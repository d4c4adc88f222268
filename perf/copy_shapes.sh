#!/usr/bin/env bash
# What the shape of a write costs PostgreSQL: the floor client's closed-loop
# binary COPY of the same rows into a fresh events_mirror, by number of
# concurrent streams (K) and rows per COPY and commit (0: each stream's whole
# share in one COPY, as `psql \copy` does). evpipe writes with one stream per
# shard and commits every batch (an ack follows a commit), so its PostgreSQL
# CPU per row is that of its shape here, not that of one big COPY.
#
#   perf/copy_shapes.sh [--rows N] [--rounds R] [--shapes "K:BATCH ..."]
#
# Default shapes: "1:0 1:4096 2:0 2:4096 2:512"; each round runs them all in
# turn (the order rotates from round to round). Prints rows/s and PostgreSQL
# µs per row (all its processes, from /proc) per run, then medians per shape.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rows=200000 rounds=3 shapes="1:0 1:4096 2:0 2:4096 2:512"
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --shapes) shapes="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

perf_setup 0
echo "# $(machine_line)"
echo "# $rows rows a run; load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
declare -A rates us
read -r -a list <<<"$shapes"
for r in $(seq "$rounds"); do
  n=${#list[@]}
  for i in $(seq 0 $((n - 1))); do
    shape=${list[$(((i + r - 1) % n))]}
    k=${shape%%:*} batch=${shape#*:}
    fresh_table
    mark="$(cpu_mark)" t0=$(now)
    "$bin/perf/floor-client" --dsn "$EVPIPE_DSN" --connections "$k" --rate max --count "$rows" --batch-rows "$batch" \
      --quiet --run-id "shape$r$i" >/dev/null
    t1=$(now)
    ticks="$(cpu_ticks_since "$mark" | cut -d' ' -f1)"
    read -r rate per <<<"$(echo "$rows $t0 $t1 $ticks $(getconf CLK_TCK)" |
      awk '{printf "%.0f %.1f", $1 / ($3 - $2), 1e6 * $4 / $5 / $1}')"
    rates[$shape]+="$rate " us[$shape]+="$per "
    printf 'round %s  K=%s rows/commit=%-6s %8s rows/s  PostgreSQL %5s us/row\n' "$r" "$k" "$batch" "$rate" "$per"
  done
done
echo "median:"
for shape in "${list[@]}"; do
  printf '  K=%s rows/commit=%-6s %8s rows/s  PostgreSQL %5s us/row\n' "${shape%%:*}" "${shape#*:}" \
    "$(tr ' ' '\n' <<<"${rates[$shape]}" | grep . | median)" "$(tr ' ' '\n' <<<"${us[$shape]}" | grep . | median)"
done
