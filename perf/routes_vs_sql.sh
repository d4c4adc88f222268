#!/usr/bin/env bash
# Routes against the SQL a user would write, side by side on one private
# PostgreSQL (issue 10):
#   append: N device telemetry messages (bare JSON, ~400 bytes) into a
#           6-column typed table, by `psql \copy` of the same rows as CSV and
#           by evpipe's append route over TCP (first send to last ack);
#   upsert: M status messages of D devices, out of order, by the best plain
#           SQL (per batch of B rows: COPY into a temporary table, then
#           INSERT ... ON CONFLICT ... DO UPDATE ... WHERE newer, one psql
#           session) and by evpipe's upsert route with [batch] max_rows = B.
# Prints rows/s of each and the ratios.
#
#   perf/routes_vs_sql.sh [--events N] [--statuses M] [--devices D] [--batch B]
#                         [--connections C] [--out FILE]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 statuses=200000 devices=10000 batch=4096 connections=4 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --statuses) statuses="$2"; shift 2 ;;
    --devices) devices="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup 0
cat >>"$scratch/evpipe.toml" <<CONF
[batch]
max_rows = $batch
[[routes]]
name = "telemetry"
topics = ["perf/telemetry"]
envelope = "none"
table = "telemetry"
idempotency = ["device_id", "measured_at"]
columns = [
  { name = "device_id", type = "text", required = true },
  { name = "temperature", type = "float8" },
  { name = "humidity", type = "float8" },
  { name = "voltage", type = "float8" },
  { name = "memory_free", type = "int8" },
  { name = "measured_at", source = "timestamp", type = "timestamptz", required = true },
]
CONF
sed -e 's/topic = "perf\/tcp"/topic = "perf\/telemetry"/' "$scratch/evpipe.toml" >"$scratch/evpipe-append.toml"
sed -e 's/topic = "perf\/tcp"/topic = "perf\/status"/' "$scratch/evpipe.toml" >"$scratch/evpipe-upsert.toml"
cat >>"$scratch/evpipe-upsert.toml" <<CONF
[[routes]]
name = "status"
topics = ["perf/status"]
envelope = "none"
table = "devices"
mode = "upsert"
key = ["device_id"]
order_by = "last_seen"
idempotency = ["device_id", "last_seen"]
columns = [
  { name = "device_id", type = "text", required = true },
  { name = "status", type = "text", required = true },
  { name = "ip_address", type = "text" },
  { name = "uptime", type = "int8" },
  { name = "last_seen", source = "timestamp", type = "timestamptz", required = true },
]
CONF

log "generating $events telemetry and $statuses status messages"
python3 - "$scratch" "$events" "$statuses" "$devices" <<'PY'
import random, sys
d, n, m, devs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
random.seed(1)
def ts(t): return "2025-01-%02dT%02d:%02d:%02dZ" % (1 + t // 86400, (t // 3600) % 24, (t // 60) % 60, t % 60)
with open(d + "/telemetry.ndjson", "w") as j, open(d + "/telemetry.csv", "w") as c:
    for i in range(n):
        dev, t = "ESP32_%05d" % (i % 1000), i // 1000
        tmp, hum, vol, mem = round(random.uniform(15, 35), 2), round(random.uniform(30, 70), 2), round(random.uniform(3.1, 3.4), 3), random.randint(30000, 50000)
        j.write('{"device_id":"%s","temperature":%s,"humidity":%s,"voltage":%s,"memory_free":%d,"timestamp":"%s",'
                '"uptime":%d,"rssi":-%d,"firmware_version":"1.2.0","ip_address":"192.168.1.%d",'
                '"wifi":{"ssid":"autocore-lab","channel":6},"boot_reason":"power_on","loop_ms":%d}\n'
                % (dev, tmp, hum, vol, mem, ts(t), t, random.randint(40, 90), i % 250, random.randint(0, 20)))
        c.write("%s,%s,%s,%s,%d,%s\n" % (dev, tmp, hum, vol, mem, ts(t)))
rows = []
times = random.sample(range(1, 10 * m), m)  # distinct: no ties for "newer" to settle
for i in range(m):
    dev, t = "dev-%05d" % random.randrange(devs), times[i]
    rows.append((dev, "s%d" % t, "10.0.%d.%d" % (t % 250, i % 250), t, ts(t)))
with open(d + "/status.ndjson", "w") as j, open(d + "/status.csv", "w") as c:
    for dev, st, ip, up, t in rows:
        j.write('{"device_id":"%s","status":"%s","ip_address":"%s","uptime":%d,"timestamp":"%s"}\n' % (dev, st, ip, up, t))
        c.write("%s,%s,%s,%d,%s\n" % (dev, st, ip, up, t))
PY
split -l "$batch" -d -a 5 "$scratch/status.csv" "$scratch/status.part."
chmod 644 "$scratch"/*.csv "$scratch"/status.part.*

tables() {
  psqlq -c "DROP TABLE IF EXISTS telemetry, devices, evpipe_route_keys" -c "CHECKPOINT" \
    -c "CREATE TABLE telemetry (device_id text NOT NULL, temperature float8, humidity float8, voltage float8, memory_free int8, measured_at timestamptz NOT NULL)" \
    -c "CREATE TABLE devices (device_id text PRIMARY KEY, status text NOT NULL, ip_address text, uptime int8, last_seen timestamptz)"
}
rate() { echo "$1 $2 $3" | awk '{printf "%.0f", $1 / ($3 - $2)}'; }

# append: psql \copy of the same rows
tables
t0=$(now); psqlq -c "\\copy telemetry FROM '$scratch/telemetry.csv' WITH (FORMAT csv)"; t1=$(now)
[ "$(psqlq -c 'SELECT count(*) FROM telemetry')" = "$events" ] || die "psql \\copy loaded a wrong row count"
copy_rate=$(rate "$events" "$t0" "$t1")
# append: evpipe
tables
with_config append; fresh_table
evpipe_start
"$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/telemetry.ndjson" \
  --connections "$connections" --quiet --json "$scratch/load.json" >/dev/null
evpipe_stop
[ "$(psqlq -c 'SELECT count(*) FROM telemetry')" = "$events" ] || die "evpipe stored a wrong telemetry count"
route_append=$(printf '%.0f' "$(json_field "$scratch/load.json" "['throughput']")")

# upsert: the plain SQL, batch by batch in one session
tables
{
  for f in "$scratch"/status.part.*; do
    echo "BEGIN;"
    echo "CREATE TEMP TABLE s (device_id text, status text, ip_address text, uptime int8, last_seen timestamptz) ON COMMIT DROP;"
    echo "\\copy s FROM '$f' WITH (FORMAT csv)"
    echo "INSERT INTO devices AS t SELECT DISTINCT ON (device_id) * FROM s ORDER BY device_id, last_seen DESC"
    echo "  ON CONFLICT (device_id) DO UPDATE SET status = EXCLUDED.status, ip_address = EXCLUDED.ip_address,"
    echo "  uptime = EXCLUDED.uptime, last_seen = EXCLUDED.last_seen WHERE EXCLUDED.last_seen > t.last_seen;"
    echo "COMMIT;"
  done
} >"$scratch/upsert.sql"
t0=$(now); psqlq -f "$scratch/upsert.sql" >/dev/null; t1=$(now)
sql_upsert=$(rate "$statuses" "$t0" "$t1")
reference="$(psqlq -c "SELECT md5(string_agg(device_id || status || last_seen, ',' ORDER BY device_id)) FROM devices")"
# upsert: evpipe
tables
with_config upsert; fresh_table
evpipe_start
"$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/status.ndjson" \
  --connections "$connections" --quiet --json "$scratch/load.json" >/dev/null
evpipe_stop
got="$(psqlq -c "SELECT md5(string_agg(device_id || status || last_seen, ',' ORDER BY device_id)) FROM devices")"
[ "$got" = "$reference" ] || die "evpipe's devices differ from the plain SQL's"
route_upsert=$(printf '%.0f' "$(json_field "$scratch/load.json" "['throughput']")")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
report="routes vs plain SQL: $events telemetry rows (6 typed columns), $statuses status messages of $devices devices, batches of $batch, $connections connections
machine: $(machine_line)

| case | plain SQL rows/s | evpipe route rows/s | ratio |
|---|---|---|---|
| append (psql \\copy of the CSV) | $copy_rate | $route_append | $(ratio "$route_append" "$copy_rate") |
| upsert (COPY to temp + INSERT ON CONFLICT WHERE newer, per batch) | $sql_upsert | $route_upsert | $(ratio "$route_upsert" "$sql_upsert") |"
echo
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
