#!/usr/bin/env bash
# What tenancy costs (issue 13, docs/tenants.md): the same N events, each
# claiming one of T tenants (`"tenant_id":"t<i mod T>"`, default T = 100),
# loaded through evpipe over TCP into a fresh events_mirror, once with
# tenancy off (the claim is just a field) and once with [tenants] enabled
# and a per-tenant quota high enough never to pause anyone (so every event
# is resolved, charged to its tenant's bucket and keyed by tenant), side by
# side in the same run. Rate: first send to last ack (every ack after
# COMMIT). R runs alternating which goes first; prints both rates per run
# (and evpipe's and PostgreSQL's CPU time per event, user + system, start
# to last ack),
# the medians and on/off (the promise: >= 0.95).
#
#   perf/tenancy_overhead.sh [--events N] [--tenants T] [--runs R] [--connections C]
#                            [--shards S] [--out FILE]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 tenants=100 runs=3 connections=4 shards=0 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --tenants) tenants="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup "$shards"
cp "$scratch/evpipe.toml" "$scratch/evpipe-off.toml"
# Quota: 100 M events/s per tenant (the bound), burst 1 G: charged, never over.
{ cat "$scratch/evpipe-off.toml"; printf '[tenants]\nenabled = true\nevents_per_s = 100000000\nburst = 1000000000\n'; } \
  >"$scratch/evpipe-on.toml"

log "generating $events events claiming $tenants tenants"
"$bin/load/evpipe-load" --emit "$scratch/plain.ndjson" --count "$events" --run-id tenancy 2>/dev/null
awk -v t="$tenants" '{ sub(/^\{/, "{\"tenant_id\":\"t" (NR % t) "\","); print }' "$scratch/plain.ndjson" \
  >"$scratch/events.ndjson"

cpu_seconds() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }

run_evpipe() {  # run_evpipe on|off: prints "rows/s evpipe-CPU-µs-per-event PostgreSQL-CPU-µs-per-event"
  with_config "$1"
  fresh_table
  local pg0; pg0="$(cpu_mark | cut -d' ' -f3)"
  evpipe_start
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/events.ndjson" \
    --connections "$connections" --quiet --json "$scratch/load.json" >/dev/null
  local cpu
  cpu="$(cpu_seconds "$evpipe_pid")"  # user + system, start to last ack (a 2-core machine: what it costs the others)
  # PostgreSQL's side (its backends, start to last ack): the tenant_id values
  # are in the rows and in the unique index's keys.
  local pg; pg="$(echo "$pg0 $(cpu_mark | cut -d' ' -f3) $(getconf CLK_TCK)" | awk '{printf "%.2f", ($2 - $1) / $3}')"
  evpipe_stop
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$events" ] || die "evpipe ($1) stored a wrong row count"
  local distinct
  distinct="$(psqlq -c 'SELECT count(DISTINCT tenant_id) FROM events_mirror')"
  if [ "$1" = on ]; then
    [ "$distinct" = "$tenants" ] || die "tenancy on stored $distinct tenants, expected $tenants"
  else
    [ "$distinct" = 1 ] || die "tenancy off stored $distinct tenant values, expected 1 ('')"
  fi
  printf '%.0f %.2f %.2f' "$(json_field "$scratch/load.json" "['throughput']")" \
    "$(awk -v c="$cpu" -v n="$events" 'BEGIN{print c * 1e6 / n}')" "$(awk -v c="$pg" -v n="$events" 'BEGIN{print c * 1e6 / n}')"
}

off=() on=() off_cpu=() on_cpu=() off_pg=() on_pg=()
table="| run | tenancy off rows/s | tenancy on ($tenants tenants) rows/s | on/off | evpipe CPU µs/event off | on | PostgreSQL CPU µs/event off | on |"
table="$table"$'\n'"|---|---|---|---|---|---|---|---|"
for r in $(seq "$runs"); do
  if [ $((r % 2)) = 1 ]; then
    read -r a b c <<<"$(run_evpipe off)"; off+=("$a"); off_cpu+=("$b"); off_pg+=("$c")
    read -r a b c <<<"$(run_evpipe on)"; on+=("$a"); on_cpu+=("$b"); on_pg+=("$c")
  else
    read -r a b c <<<"$(run_evpipe on)"; on+=("$a"); on_cpu+=("$b"); on_pg+=("$c")
    read -r a b c <<<"$(run_evpipe off)"; off+=("$a"); off_cpu+=("$b"); off_pg+=("$c")
  fi
  table="$table"$'\n'"| $r | ${off[-1]} | ${on[-1]} | $(ratio "${on[-1]}" "${off[-1]}") | ${off_cpu[-1]} | ${on_cpu[-1]} | ${off_pg[-1]} | ${on_pg[-1]} |"
  log "run $r: tenancy off ${off[-1]} rows/s (${off_cpu[-1]} µs CPU/event), on ${on[-1]} rows/s (${on_cpu[-1]} µs)"
done
m_off=$(printf '%s\n' "${off[@]}" | median)
m_on=$(printf '%s\n' "${on[@]}" | median)
table="$table"$'\n'"| median | $m_off | $m_on | $(ratio "$m_on" "$m_off") | $(printf '%s\n' "${off_cpu[@]}" | median) | $(printf '%s\n' "${on_cpu[@]}" | median) | $(printf '%s\n' "${off_pg[@]}" | median) | $(printf '%s\n' "${on_pg[@]}" | median) |"
report="$events events claiming $tenants tenants, $connections connections, shards=$shards (0 = one per core), $runs alternating runs
machine: $(machine_line)
load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)

$table"
echo
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
