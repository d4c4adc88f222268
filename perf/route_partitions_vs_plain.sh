#!/usr/bin/env bash
# An append route into a table evpipe keeps partitioned ([[routes]]
# partition_by with [storage] partition = "day", docs/partitions.md "Route
# tables") against the same route into the plain table, end to end through
# TCP: N bare telemetry messages (~400 bytes, the messages of
# perf/routes_vs_sql.sh, timed over the last hours so that they land in
# today's and yesterday's partitions) sent by evpipe-load over C
# connections, first send to last ack, into fresh tables each run. Runs
# alternate plain / partitioned (and which goes first alternates) so that
# other load on the machine falls on both alike. Both sides settle
# redeliveries through evpipe_route_keys (no unique index on the table).
# Prints each run, the medians and partitioned/plain.
#
#   perf/route_partitions_vs_plain.sh [--events N] [--runs R] [--connections C] [--out FILE]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 runs=3 connections=4 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup 0
sed -i -e 's/topic = "perf\/tcp"/topic = "perf\/telemetry"/' "$scratch/evpipe.toml"
route() {  # route [partition_by line]
  cat <<CONF
[batch]
max_rows = 4096
[[routes]]
name = "telemetry"
topics = ["perf/telemetry"]
envelope = "none"
table = "telemetry"
idempotency = ["device_id", "measured_at"]
$1
columns = [
  { name = "device_id", type = "text", required = true },
  { name = "temperature", type = "float8" },
  { name = "humidity", type = "float8" },
  { name = "voltage", type = "float8" },
  { name = "memory_free", type = "int8" },
  { name = "measured_at", source = "timestamp", type = "timestamptz", required = true },
]
CONF
}
{ cat "$scratch/evpipe.toml"; route ""; } >"$scratch/evpipe-plain.toml"
{ cat "$scratch/evpipe.toml"; printf '[storage]\npartition = "day"\n'; route 'partition_by = "measured_at"'; } \
  >"$scratch/evpipe-partitioned.toml"

log "generating $events telemetry messages"
python3 - "$scratch" "$events" <<'PY'
import random, sys, time
d, n = sys.argv[1], int(sys.argv[2])
random.seed(1)
end = int(time.time())
def ts(t): return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
with open(d + "/telemetry.ndjson", "w") as j:
    for i in range(n):
        # 1,000 devices, one message each per second, ending now.
        dev, t = "ESP32_%05d" % (i % 1000), end - (n - i) // 1000
        tmp, hum, vol, mem = round(random.uniform(15, 35), 2), round(random.uniform(30, 70), 2), round(random.uniform(3.1, 3.4), 3), random.randint(30000, 50000)
        j.write('{"device_id":"%s","temperature":%s,"humidity":%s,"voltage":%s,"memory_free":%d,"timestamp":"%s",'
                '"uptime":%d,"rssi":-%d,"firmware_version":"1.2.0","ip_address":"192.168.1.%d",'
                '"wifi":{"ssid":"autocore-lab","channel":6},"boot_reason":"power_on","loop_ms":%d}\n'
                % (dev, tmp, hum, vol, mem, ts(t), t, random.randint(40, 90), i % 250, random.randint(0, 20)))
PY

one_run() {  # one_run plain|partitioned: prints messages/s
  with_config "$1"
  psqlq -c "DROP TABLE IF EXISTS telemetry, events_mirror, dlq_events, evpipe_route_keys, evpipe_mirror_keys, evpipe_dlq_keys"
  local cols="device_id text NOT NULL, temperature float8, humidity float8, voltage float8, memory_free int8, measured_at timestamptz NOT NULL"
  if [ "$1" = plain ]; then
    psqlq -c "CREATE TABLE telemetry ($cols)"
  else
    psqlq -c "CREATE TABLE telemetry ($cols) PARTITION BY RANGE (measured_at)"
  fi
  "$bin/app/evpipe" migrate --config "$scratch/evpipe.toml" 2>/dev/null
  psqlq -c "CHECKPOINT"
  evpipe_start
  if [ "$1" = partitioned ]; then
    # The first maintenance round (at start) makes today's partitions and DEFAULT.
    for _ in $(seq 100); do
      [ "$(psqlq -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry'::regclass")" -ge 5 ] && break
      sleep 0.1
    done
  fi
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/telemetry.ndjson" \
    --connections "$connections" --quiet --json "$scratch/load.json" >/dev/null
  evpipe_stop
  [ "$(psqlq -c 'SELECT count(*) FROM telemetry')" = "$events" ] || die "$1: wrong telemetry count"
  if [ "$1" = partitioned ]; then
    [ "$(psqlq -c "SELECT relkind FROM pg_class WHERE oid = 'telemetry'::regclass")" = p ] || die "not partitioned"
    log "partitioned: $(psqlq -c "SELECT string_agg(tableoid::regclass || '=' || n, ' ') FROM (SELECT tableoid, count(*) n FROM telemetry GROUP BY 1) c")"
  fi
  printf '%.0f' "$(json_field "$scratch/load.json" "['throughput']")"
}

alternate_pair "$runs" one_run plain partitioned msg/s
plain=("${pair_a[@]}") part=("${pair_b[@]}")
m_plain=$(printf '%s\n' "${plain[@]}" | median)
m_part=$(printf '%s\n' "${part[@]}" | median)
report="$events telemetry messages, append route, $connections connections, $runs alternating runs
plain table:       ${plain[*]} msg/s, median $m_plain
partitioned table: ${part[*]} msg/s, median $m_part
partitioned/plain: $(ratio "$m_part" "$m_plain")
machine: $(machine_line)"
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
