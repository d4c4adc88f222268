#!/usr/bin/env bash
# Instructions per event (callgrind Ir) of a whole `evpipe run`, tenancy off
# against on (issue 13, docs/performance-tenants.md "Tenancy"): start, N events over
# 4 TCP connections (each claiming one of 100 tenants, as in
# perf/tenancy_overhead.sh), SIGTERM; startup is included in both, so the
# difference per event is what tenancy adds. Deterministic, unlike rates on
# a shared machine. With --annotate DIR, callgrind_annotate's caller tree of
# each run goes to DIR/cg_off.txt and DIR/cg_on.txt.
#
#   perf/tenancy_callgrind.sh [--events N] [--annotate DIR]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=20000 annotate=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --annotate) annotate="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
command -v valgrind >/dev/null || die "valgrind is needed (apt-get install valgrind)"

perf_setup 0
cp "$scratch/evpipe.toml" "$scratch/evpipe-off.toml"
{ cat "$scratch/evpipe-off.toml"; printf '[tenants]\nenabled = true\nevents_per_s = 100000000\nburst = 1000000000\n'; } \
  >"$scratch/evpipe-on.toml"
"$bin/load/evpipe-load" --emit "$scratch/plain.ndjson" --count "$events" --run-id tenancy-cg 2>/dev/null
awk '{ sub(/^\{/, "{\"tenant_id\":\"t" (NR % 100) "\","); print }' "$scratch/plain.ndjson" >"$scratch/events.ndjson"

declare -A ir
for mode in off on; do
  with_config "$mode"
  fresh_table
  valgrind --tool=callgrind --callgrind-out-file="$scratch/cg.$mode" "$bin/app/evpipe" run \
    --config "$scratch/evpipe.toml" 2>"$scratch/valgrind.$mode.log" &
  evpipe_pid=$!
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$tcp_port") 2>/dev/null && break; sleep 0.1; done
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/events.ndjson" --connections 4 \
    --quiet >/dev/null
  kill -TERM "$evpipe_pid"; wait "$evpipe_pid" || true; evpipe_pid=""
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$events" ] || die "evpipe ($mode) stored a wrong row count"
  ir[$mode]=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$scratch/cg.$mode" | head -1)
  [ -n "$annotate" ] && callgrind_annotate --tree=caller "$scratch/cg.$mode" >"$annotate/cg_$mode.txt" 2>/dev/null
  log "tenancy $mode: $(( ir[$mode] / events )) Ir/event"
done
echo "$events events, 100 tenants: off $(( ir[off] / events )) Ir/event, on $(( ir[on] / events )) Ir/event, on/off $(ratio "${ir[on]}" "${ir[off]}")"
