#!/usr/bin/env bash
# Tenant fairness (issue 13, docs/tenants.md): one tenant sending 10 times its
# quota must not raise another tenant's p99 latency by more than 2x.
# Two TCP listeners, each bound to a tenant (victim, noisy), both with the
# quota Q events/s (burst Q). The victim sends Q/2 events/s open loop over C
# connections for S seconds while the noisy tenant sends, at the same time,
# first Q events/s (its quota: the baseline), then 10 Q events/s; runs
# alternate baseline / flood (which goes first alternates too). Prints the
# victim's p99 (send to ack) in each run, the medians and flood/baseline
# (the promise: <= 2.0). The noisy tenant's own latencies grow without bound
# (its connections are paused); only the victim's are measured.
#
#   perf/tenant_fairness.sh [--quota Q] [--seconds S] [--runs R] [--connections C] [--evpipe BIN] [--out FILE]
# --evpipe runs another build of evpipe (an A/B: invoke the script with each build in turn).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

quota=2000 seconds=15 runs=3 connections=2 out="" evpipe_bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quota) quota="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --evpipe) evpipe_bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup 0
noisy_port="$(free_port)"
# The victim's listener is perf_setup's ($tcp_port); the noisy tenant gets its own.
sed -i "s/^topic = \"perf\\/tcp\"/topic = \"perf\\/tcp\"\ntenant = \"victim\"/" "$scratch/evpipe.toml"
cat >>"$scratch/evpipe.toml" <<CONF
[[sources.tcp]]
listen = "127.0.0.1:$noisy_port"
topic = "perf/noisy"
tenant = "noisy"
[tenants]
enabled = true
events_per_s = $quota
burst = $quota
CONF

cpu_seconds() { awk -v t="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo "?"; }

one_run() {  # one_run NOISY_RATE: prints the victim's p99 in ms
  fresh_table
  evpipe_start "$evpipe_bin"
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$noisy_port" --rate "$1" --duration "$seconds" \
    --connections "$connections" --run-id "noisy-$1-$RANDOM" --quiet --json "$scratch/noisy.json" >/dev/null &
  local noisy=$!
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --rate $((quota / 2)) --duration "$seconds" \
    --connections "$connections" --warmup 2 --run-id "victim-$RANDOM" --quiet --json "$scratch/victim.json" >/dev/null
  # CPU seconds the noisy tenant's load generator and evpipe used (a 2-core
  # machine: what the generator burns, the victim's evpipe does not get).
  log "  noisy rate $1: CPU s: noisy evpipe-load $(cpu_seconds "$noisy"), evpipe $(cpu_seconds "$evpipe_pid")"
  # The flooding tenant's backlog drains at its quota: it is stopped, not waited for.
  kill "$noisy" 2>/dev/null || true
  wait "$noisy" 2>/dev/null || true
  evpipe_stop
  printf '%.3f' "$(json_field "$scratch/victim.json" "['latency_ms']['p99']")"
}

base=() flood=()
for r in $(seq "$runs"); do
  if [ $((r % 2)) = 1 ]; then
    base+=("$(one_run "$quota")"); flood+=("$(one_run $((quota * 10)))")
  else
    flood+=("$(one_run $((quota * 10)))"); base+=("$(one_run "$quota")")
  fi
  log "run $r: victim p99 with the noisy tenant at its quota ${base[-1]} ms, at 10x ${flood[-1]} ms"
done
m_base=$(printf '%s\n' "${base[@]}" | median)
m_flood=$(printf '%s\n' "${flood[@]}" | median)
report="quota $quota events/s (burst $quota) per tenant; victim at $((quota / 2))/s, $connections connections, ${seconds} s, $runs alternating runs
victim p99, noisy tenant at 1x its quota: ${base[*]} ms, median $m_base
victim p99, noisy tenant at 10x its quota: ${flood[*]} ms, median $m_flood
flood/baseline: $(ratio "$m_flood" "$m_base")
machine: $(machine_line)"
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
