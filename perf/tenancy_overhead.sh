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
# --tenant-first adds a third case to each run: tenancy on with the unique
# index built in the order evpipe used before 2026-12-02, (tenant_id,
# idempotency_key) instead of (idempotency_key, tenant_id).
#
#   perf/tenancy_overhead.sh [--events N] [--tenants T] [--runs R] [--connections C]
#                            [--shards S] [--tenant-first] [--out FILE]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 tenants=100 runs=3 connections=4 shards=0 out="" tenant_first=0
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --tenants) tenants="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    --tenant-first) tenant_first=1; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

run_evpipe() {  # run_evpipe on|off|first: prints "rows/s evpipe-CPU-µs-per-event PostgreSQL-CPU-µs-per-event"
  local case="$1"
  with_config "${case/first/on}"
  fresh_table
  if [ "$case" = first ]; then  # the unique index as built before 2026-12-02: the tenant first
    psqlq -c "DROP INDEX events_mirror_tenant_idempotency_key_key" \
      -c "CREATE UNIQUE INDEX events_mirror_tenant_idempotency_key_key ON events_mirror (tenant_id, idempotency_key)" -c CHECKPOINT
  fi
  set -- "${case/first/on}"
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

off=() on=() first=() off_cpu=() on_cpu=() first_cpu=() off_pg=() on_pg=() first_pg=()
cases=(off on); [ "$tenant_first" = 1 ] && cases+=(first)
table="| run | tenancy off rows/s | tenancy on ($tenants tenants) rows/s | on/off | evpipe CPU µs/event off | on | PostgreSQL CPU µs/event off | on |"
table="$table"$'\n'"|---|---|---|---|---|---|---|---|"
[ "$tenant_first" = 1 ] &&
  table="${table%%$'\n'*} on, index (tenant_id, idempotency_key) rows/s | its on/off | its evpipe µs | its PostgreSQL µs |"$'\n'"|---|---|---|---|---|---|---|---|---|---|---|---|"
for r in $(seq "$runs"); do
  n=${#cases[@]}
  for i in $(seq 0 $((n - 1))); do  # each run starts one case later: every case goes first in turn
    c="${cases[$(((i + r - 1) % n))]}"
    read -r a b d <<<"$(run_evpipe "$c")"
    eval "$c+=(\"\$a\"); ${c}_cpu+=(\"\$b\"); ${c}_pg+=(\"\$d\")"
  done
  row="| $r | ${off[-1]} | ${on[-1]} | $(ratio "${on[-1]}" "${off[-1]}") | ${off_cpu[-1]} | ${on_cpu[-1]} | ${off_pg[-1]} | ${on_pg[-1]} |"
  [ "$tenant_first" = 1 ] && row="$row ${first[-1]} | $(ratio "${first[-1]}" "${off[-1]}") | ${first_cpu[-1]} | ${first_pg[-1]} |"
  table="$table"$'\n'"$row"
  log "run $r: tenancy off ${off[-1]} rows/s (${off_cpu[-1]} µs CPU/event), on ${on[-1]} rows/s (${on_cpu[-1]} µs)${first:+, on with the tenant-first index ${first[-1]:-} rows/s}"
done
m_off=$(printf '%s\n' "${off[@]}" | median)
m_on=$(printf '%s\n' "${on[@]}" | median)
row="| median | $m_off | $m_on | $(ratio "$m_on" "$m_off") | $(printf '%s\n' "${off_cpu[@]}" | median) | $(printf '%s\n' "${on_cpu[@]}" | median) | $(printf '%s\n' "${off_pg[@]}" | median) | $(printf '%s\n' "${on_pg[@]}" | median) |"
if [ "$tenant_first" = 1 ]; then
  m_first=$(printf '%s\n' "${first[@]}" | median)
  row="$row $m_first | $(ratio "$m_first" "$m_off") | $(printf '%s\n' "${first_cpu[@]}" | median) | $(printf '%s\n' "${first_pg[@]}" | median) |"
fi
table="$table"$'\n'"$row"
report="$events events claiming $tenants tenants, $connections connections, shards=$shards (0 = one per core), $runs alternating runs
machine: $(machine_line)
load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)

$table"
echo
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
