#!/usr/bin/env bash
# Payload schemas against envelope-only validation, end to end through TCP
# (issue 13): N project_created events with a 10-field payload (valid for
# schemas/kinds/project_created.json) sent by evpipe-load over C connections,
# first send to last ack, into a fresh table each run; runs alternate
# schemas off / on so that load from other processes on the machine falls on
# both alike (and which of the two goes first alternates). Prints each run, the medians and on/off (the promise: >= 0.95).
#
#   perf/schemas_vs_envelope.sh [--events N] [--runs R] [--connections C] [--out FILE]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 runs=5 connections=4 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup 0
cp "$scratch/evpipe.toml" "$scratch/evpipe-off.toml"
{ cat "$scratch/evpipe-off.toml"; printf '[schemas]\nenabled = true\ndir = "%s/schemas/kinds"\n' "$EVPIPE_ROOT"; } \
  >"$scratch/evpipe-on.toml"

log "generating $events project_created events"
python3 - "$scratch/events.ndjson" "$events" <<'PY'
import random, sys, uuid
path, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
u = lambda: str(uuid.UUID(int=random.getrandbits(128)))
with open(path, "w") as f:
    for i in range(n):
        f.write('{"trace_id":"%s","ts":"2025-01-15T10:30:00Z","kind":"project_created","idempotency_key":"perf-%d",'
                '"payload":{"project_id":"%s","name":"Project %d","status":"%s","created_by":"%s",'
                '"timestamp":"2025-01-15T10:30:00.123456+00:00","description":"Migrate the tracker to the new event pipeline",'
                '"tags":["infra","q1","events"],"priority":%d,"budget":%d.5,"metadata":{"source":"api","version":"1.0.0"}}}\n'
                % (u(), i, u(), i, random.choice(["planning", "active", "on_hold", "completed"]), u(),
                   random.randint(1, 5), random.randint(0, 99999)))
PY

one_run() {  # one_run off|on: prints events/s
  with_config "$1"
  fresh_table
  evpipe_start
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/events.ndjson" \
    --connections "$connections" --quiet --json "$scratch/load.json" >/dev/null
  evpipe_stop
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$events" ] || die "$1: wrong events_mirror count"
  [ "$(psqlq -c 'SELECT count(*) FROM dlq_events')" = "0" ] || die "$1: events were dead-lettered"
  printf '%.0f' "$(json_field "$scratch/load.json" "['throughput']")"
}

# Which goes first alternates too: a run right after another can be slower
# or faster (checkpoints, caches), and that must not favour one side.
alternate_pair "$runs" one_run off on events/s
off=("${pair_a[@]}") on=("${pair_b[@]}")
m_off=$(printf '%s\n' "${off[@]}" | median)
m_on=$(printf '%s\n' "${on[@]}" | median)
report="$events events (project_created, 10-field payload), $connections connections, $runs alternating runs
schemas off: ${off[*]} events/s, median $m_off
schemas on:  ${on[*]} events/s, median $m_on
on/off: $(echo "$m_on $m_off" | awk '{printf "%.3f", $1 / $2}')
machine: $(machine_line)"
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
