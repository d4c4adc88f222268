#!/usr/bin/env bash
# What the second core's work costs PostgreSQL: `psql \copy` of the same rows
# into a fresh events_mirror, alone and with a neighbour process busy on the
# other core, alternating. PostgreSQL's CPU per row (its backends, from /proc)
# shows how much slower its work gets when the machine's other core is busy,
# as it is whenever a broker, evpipe and a load generator run beside it. The
# ceilings of the throughput targets (`psql \copy` alone) leave that core idle.
#
#   perf/copy_neighbour.sh [--rows N] [--runs R] [--duty PCT]
#
# --duty PCT: the neighbour spins PCT % of each 10 ms and sleeps the rest
# (default 100: all the time). Prints, per run and arm, rows/s and
# PostgreSQL µs per row, then the medians.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rows=200000 runs=5 duty=100
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --duty) duty="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ "$duty" -ge 1 ] && [ "$duty" -le 100 ] || die "--duty: 1 to 100"

perf_setup 0
"$bin/load/evpipe-load" --count "$rows" --run-id neighbour --invalid-frac 0 --dup-frac 0 \
  --emit "$scratch/neighbour.ndjson" --emit-csv "$scratch/neighbour.csv" 2>/dev/null
chmod 644 "$scratch/neighbour.csv"

neighbour_pid=""
neighbour_start() {
  python3 -c "
import time
busy, period = $duty / 1000.0, 0.010
while True:
    t = time.monotonic()
    while time.monotonic() - t < busy: pass
    if busy < period: time.sleep(period - busy)
" &
  neighbour_pid=$!
  sleep 0.3
}
neighbour_stop() { [ -z "$neighbour_pid" ] || { kill "$neighbour_pid" 2>/dev/null; wait "$neighbour_pid" 2>/dev/null || true; neighbour_pid=""; }; }
trap 'neighbour_stop; cleanup_scratch' EXIT

# One copy: prints "rows/s postgres_us_per_row".
copy_once() {
  local t0 t1 ticks
  fresh_table
  local mark; mark="$(cpu_mark)"
  t0=$(now)
  psqlq -c "\\copy events_mirror (topic, payload) FROM '$scratch/neighbour.csv' WITH (FORMAT csv)" >/dev/null
  t1=$(now)
  ticks="$(cpu_ticks_since "$mark" | cut -d' ' -f1)"
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$rows" ] || die "psql \\copy loaded a wrong row count"
  echo "$rows $t0 $t1 $ticks $(getconf CLK_TCK)" | awk '{printf "%.0f %.1f", $1 / ($3 - $2), 1e6 * $4 / $5 / $1}'
}

echo "# $(machine_line)"
echo "# $rows rows; neighbour busy $duty % of the time; load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
printf '%-4s %14s %10s %18s %10s %7s\n' run alone_rows/s pg_us/row neighbour_rows/s pg_us/row ratio
alone=() near=() alone_us=() near_us=()
for r in $(seq "$runs"); do
  if [ $((r % 2)) = 1 ]; then
    read -r a au <<<"$(copy_once)"
    neighbour_start; read -r b bu <<<"$(copy_once)"; neighbour_stop
  else
    neighbour_start; read -r b bu <<<"$(copy_once)"; neighbour_stop
    read -r a au <<<"$(copy_once)"
  fi
  alone+=("$a") near+=("$b") alone_us+=("$au") near_us+=("$bu")
  printf '%-4s %14s %10s %18s %10s %7s\n' "$r" "$a" "$au" "$b" "$bu" "$(ratio "$b" "$a")"
done
ma="$(printf '%s\n' "${alone[@]}" | median)" mb="$(printf '%s\n' "${near[@]}" | median)"
printf '%-4s %14.0f %10s %18.0f %10s %7s\n' median "$ma" "$(printf '%s\n' "${alone_us[@]}" | median)" \
  "$mb" "$(printf '%s\n' "${near_us[@]}" | median)" "$(ratio "$mb" "$ma")"
