#!/usr/bin/env bash
# Routes against the SQL a user would write, side by side on one private
# PostgreSQL (issue 10):
#   append: N device telemetry messages (bare JSON, ~400 bytes) into a
#           6-column typed table, by `psql \copy` of the same rows as CSV and
#           by evpipe's append route over TCP (first send to last ack): into
#           the table as it is (evpipe keeps the keys in evpipe_route_keys),
#           with a unique index on the identity (both sides pay for it), and
#           against the rows' and their keys' \copy in one transaction (the
#           plain SQL that keeps evpipe's promise without the index);
#   upsert: M status messages of D devices, out of order, by the best plain
#           SQL (per batch of B rows: COPY into a temporary table, then
#           INSERT ... ON CONFLICT ... DO UPDATE ... WHERE newer, one psql
#           session) and by evpipe's upsert route with [batch] max_rows = B.
# Each of R runs measures every case once, the order of SQL and evpipe
# alternating from run to run; prints each run's rows/s and ratios and the
# medians, and for the append cases the CPU per row of PostgreSQL, evpipe and
# the client (psql or evpipe-load). Only ratios of one run mean much on a
# shared machine.
#
#   perf/routes_vs_sql.sh [--events N] [--statuses M] [--devices D] [--batch B]
#                         [--connections C] [--runs R] [--binary PATH] [--out FILE]
#                         [--stored-keys K]
#
# --stored-keys: before each append run without an index (evpipe's, and the
# SQL's with the keys), evpipe_route_keys already holds K keys of the week
# before, as a running evpipe's table does (K/2 random 16-byte keys, K/2
# 24-byte keys led by an earlier message time); without it the keys table
# starts empty, which flatters a B-tree of random keys (it fits in memory,
# few pages to log).
# --binary measures another evpipe build in the same runs (an extra column),
# e.g. the build before a change.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 statuses=200000 devices=10000 batch=4096 connections=4 runs=1 other_bin="" out="" stored_keys=0
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --statuses) statuses="$2"; shift 2 ;;
    --devices) devices="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --binary) other_bin="$(realpath "$2")"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --stored-keys) stored_keys="$2"; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

perf_setup 0
cat >>"$scratch/evpipe.toml" <<CONF
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
# The upsert route's batches are the plain SQL's (B rows); the append route
# keeps evpipe's defaults, as psql \copy is one COPY.
cat >>"$scratch/evpipe-upsert.toml" <<CONF
[batch]
max_rows = $batch
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
import hashlib, random, sys
d, n, m, devs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
random.seed(1)
def ts(t): return "2025-01-%02dT%02d:%02d:%02dZ" % (1 + t // 86400, (t // 3600) % 24, (t // 60) % 60, t % 60)
with open(d + "/telemetry.ndjson", "w") as j, open(d + "/telemetry.csv", "w") as c, open(d + "/keys.csv", "w") as k:
    for i in range(n):
        dev, t = "ESP32_%05d" % (i % 1000), i // 1000
        tmp, hum, vol, mem = round(random.uniform(15, 35), 2), round(random.uniform(30, 70), 2), round(random.uniform(3.1, 3.4), 3), random.randint(30000, 50000)
        j.write('{"device_id":"%s","temperature":%s,"humidity":%s,"voltage":%s,"memory_free":%d,"timestamp":"%s",'
                '"uptime":%d,"rssi":-%d,"firmware_version":"1.2.0","ip_address":"192.168.1.%d",'
                '"wifi":{"ssid":"autocore-lab","channel":6},"boot_reason":"power_on","loop_ms":%d}\n'
                % (dev, tmp, hum, vol, mem, ts(t), t, random.randint(40, 90), i % 250, random.randint(0, 20)))
        c.write("%s,%s,%s,%s,%d,%s\n" % (dev, tmp, hum, vol, mem, ts(t)))
        # The key evpipe claims for this row (io/postgres/table_writer.cc):
        # the message time (PostgreSQL microseconds, sign bit flipped, big
        # endian), then a 16-byte hash of the identity (md5 here: the same
        # size and spread, not the same bytes).
        at = ((1735689600 + t - 946684800) * 1000000) ^ (1 << 63)
        k.write("\\x%016x%s\n" % (at, hashlib.md5(("telemetry\0%s\0%s" % (dev, ts(t))).encode()).hexdigest()))
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
  # "unique": telemetry gets a unique index on the route's idempotency
  # columns, which evpipe then uses instead of evpipe_route_keys (both sides
  # pay for the index: it is the same table).
  [ "${1:-}" != unique ] || psqlq -c "CREATE UNIQUE INDEX ON telemetry (device_id, measured_at)"
}
# fresh_table with the migrate of the binary measured (binary $1): each
# build gets the evpipe_route_keys (and its indexes) it makes itself.
# $2 = keys: fill evpipe_route_keys with the stored keys (--stored-keys).
fresh_for() {
  psqlq -c "DROP TABLE IF EXISTS events_mirror, dlq_events"
  "$1" migrate --config "$scratch/evpipe.toml" 2>/dev/null
  if [ "${2:-}" = keys ] && [ "$stored_keys" -gt 0 ]; then
    psqlq -c "INSERT INTO evpipe_route_keys (key, created_at) SELECT key, created_at FROM stored_keys ORDER BY key" \
      -c "VACUUM ANALYZE evpipe_route_keys"
  fi
  psqlq -c "CHECKPOINT"
}
# The stored keys (made once): created 1 to 6 days ago, so that no pruning
# of a 7-day retention touches them.
if [ "$stored_keys" -gt 0 ]; then
  log "making $stored_keys stored keys"
  psqlq -c "CREATE TABLE stored_keys AS SELECT CASE WHEN i % 2 = 0 THEN decode(md5('k' || i), 'hex')
      ELSE int8send((((extract(epoch FROM timestamptz '2024-12-25T00:00:00Z' - timestamptz '2000-01-01T00:00:00Z')
                       * 1000000)::int8 + i * 100) # (-9223372036854775808)::int8)) || decode(md5('k' || i), 'hex') END AS key,
      now() - interval '1 day' - (i % 432000) * interval '1 second' AS created_at
    FROM generate_series(1, $stored_keys) i"
fi
rate() { echo "$1 $2 $3" | awk '{printf "%.0f", $1 / ($3 - $2)}'; }

# append: psql \copy of the same rows
sql_append() {
  local t0 t1 mark
  tables "${1:-}"
  mark="$(cpu_mark)"
  t0=$(now)
  # (the command's own stderr apart: $scratch/client.time holds time's line alone)
  { TIMEFORMAT='%U %S'; time psqlq -c "\\copy telemetry FROM '$scratch/telemetry.csv' WITH (FORMAT csv)" \
      2>"$scratch/client.err"; } 2>"$scratch/client.time"
  t1=$(now)
  cpu_note "append${1:+, $1}" "psql \\copy" "$mark" psql
  [ "$(psqlq -c 'SELECT count(*) FROM telemetry')" = "$events" ] || die "psql \\copy loaded a wrong row count"
  rate "$events" "$t0" "$t1"
}
# append with the keys: what PostgreSQL does for evpipe's append into a table
# without a unique index, by plain SQL in one session and one transaction:
# psql \copy of the rows, then of their keys into the evpipe_route_keys that
# evpipe's migrate makes (with --stored-keys, holding them): the plain SQL a
# user would write to recognise a redelivery after a restart without a
# unique index on the table (a reference, not a ceiling).
sql_append_keys() {
  local t0 t1 mark
  tables
  with_config append; fresh_for "$bin/app/evpipe" keys
  mark="$(cpu_mark)"
  t0=$(now)
  { TIMEFORMAT='%U %S'; time psqlq -c "BEGIN" -c "\\copy telemetry FROM '$scratch/telemetry.csv' WITH (FORMAT csv)" \
      -c "\\copy evpipe_route_keys (key) FROM '$scratch/keys.csv' WITH (FORMAT csv)" -c "COMMIT" \
      2>"$scratch/client.err"; } 2>"$scratch/client.time"
  t1=$(now)
  cpu_note "append, keys" "psql \\copy, rows and keys" "$mark" psql
  [ "$(psqlq -c 'SELECT count(*) FROM telemetry')" = "$events" ] || die "psql \\copy loaded a wrong row count"
  [ "$(psqlq -c 'SELECT count(*) FROM evpipe_route_keys')" = "$((events + stored_keys))" ] ||
    die "psql \\copy loaded a wrong key count"
  rate "$events" "$t0" "$t1"
}
# cpu_note CASE WHO MARK CLIENT: logs, and keeps in $scratch/cpu for the CPU
# table, the CPU per row since cpu_mark's MARK: PostgreSQL's (every process
# of the cluster), evpipe's (0 for plain SQL) and the client's (psql or
# evpipe-load, from $scratch/client.time: bash's time of psql, and
# evpipe-load's own count of its CPU while sending); run before evpipe stops.
cpu_note() {
  local ticks client
  ticks="$(cpu_ticks_since "$3")"
  client="$(awk '{print $1 + $2}' "$scratch/client.time")"
  echo "$ticks $client $events $(getconf CLK_TCK)" | awk -v c="$1" -v w="$2" -v cl="$4" '{
    us = 1e6 / $5
    printf "%s\t%s\t%.2f\t%.2f\t%.2f\n", c, w, $1 * us / $4, $2 * us / $4, $3 * 1e6 / $4 }' >>"$scratch/cpu"
  log "$1, $2: $(tail -1 "$scratch/cpu" | awk -F'\t' -v cl="$4" '{printf "PostgreSQL %s µs/row, evpipe %s µs/row, %s %s µs/row", $3, $4, cl, $5}')"
}
# append: evpipe (binary $1; $2 = unique: see tables; keys: the same as none,
# the arm beside sql_append_keys, logged apart)
route_append() {
  tables "${2:-}"
  with_config append; fresh_for "$1" "$( [ "${2:-}" != unique ] && echo keys)"
  evpipe_start "$1"
  local mark; mark="$(cpu_mark)"
  thread_mark "$evpipe_pid" >"$scratch/threads.0"
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/telemetry.ndjson" \
    --connections "$connections" --quiet --json "$scratch/load.json" >/dev/null 2>"$scratch/client.err"
  # Its CPU while it sent (its own count: reading the file before is not in the timed window).
  local load_cpu; load_cpu="$(json_field "$scratch/load.json" "['cpu_seconds']")"
  echo "$load_cpu 0" >"$scratch/client.time"
  [ "$1" != "$bin/app/evpipe" ] || cpu_note "append${2:+, $2}" "evpipe route" "$mark" evpipe-load
  thread_note "$scratch/threads.0" "$evpipe_pid" "$events" \
    "$([ "$1" = "$bin/app/evpipe" ] && echo this || echo other):append${2:+,$2}" >>"$scratch/threads.txt"
  evpipe_stop
  [ "$(psqlq -c 'SELECT count(*) FROM telemetry')" = "$events" ] || die "evpipe stored a wrong telemetry count"
  printf '%.0f' "$(json_field "$scratch/load.json" "['throughput']")"
}

# upsert: the plain SQL, batch by batch in one session
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
devices_md5() { psqlq -c "SELECT md5(string_agg(device_id || status || last_seen, ',' ORDER BY device_id)) FROM devices"; }
# (these run in $(...), a subshell: what must outlive them goes to a file)
sql_upsert() {
  local t0 t1
  tables
  t0=$(now); psqlq -f "$scratch/upsert.sql" >/dev/null; t1=$(now)
  devices_md5 >"$scratch/reference"
  rate "$statuses" "$t0" "$t1"
}
# upsert: evpipe (binary $1); after sql_upsert, whose result it must equal
route_upsert() {
  tables
  with_config upsert; fresh_for "$1"
  evpipe_start "$1"
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/status.ndjson" \
    --connections "$connections" --quiet --json "$scratch/load.json" >/dev/null
  evpipe_stop
  [ "$(devices_md5)" = "$(cat "$scratch/reference")" ] || die "evpipe's devices differ from the plain SQL's"
  printf '%.0f' "$(json_field "$scratch/load.json" "['throughput']")"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -a ca ea oa cu eu ou ci ei oi ck ek ok rea roa reu rou rei roi rek rok
# One case of one run: "$1" = sql function, "$2" = route function, "$3" = its
# extra argument, "$4" = 1 for SQL first; sets c e o.
one_case() {
  local sqlf="$1" routef="$2" arg="$3" sql_first="$4"
  o=""
  if [ "$sql_first" = 1 ]; then
    c=$("$sqlf" $arg); e=$("$routef" "$bin/app/evpipe" $arg); [ -n "$other_bin" ] && o=$("$routef" "$other_bin" $arg)
  else
    [ -n "$other_bin" ] && o=$("$routef" "$other_bin" $arg); e=$("$routef" "$bin/app/evpipe" $arg); c=$("$sqlf" $arg)
  fi
  return 0
}
for r in $(seq "$runs"); do
  odd=$((r % 2))
  one_case sql_append route_append "" "$odd"
  ca+=("$c"); ea+=("$e"); rea+=("$(ratio "$e" "$c")")
  [ -n "$other_bin" ] && { oa+=("$o"); roa+=("$(ratio "$o" "$c")"); }
  one_case sql_append route_append unique "$odd"
  ci+=("$c"); ei+=("$e"); rei+=("$(ratio "$e" "$c")")
  [ -n "$other_bin" ] && { oi+=("$o"); roi+=("$(ratio "$o" "$c")"); }
  one_case sql_append_keys route_append keys "$odd"
  ck+=("$c"); ek+=("$e"); rek+=("$(ratio "$e" "$c")")
  [ -n "$other_bin" ] && { ok+=("$o"); rok+=("$(ratio "$o" "$c")"); }
  # the plain SQL runs first every time: it sets the reference the route must reach
  c=$(sql_upsert)
  if [ "$odd" = 1 ]; then
    e=$(route_upsert "$bin/app/evpipe"); o=""; [ -n "$other_bin" ] && o=$(route_upsert "$other_bin")
  else
    [ -n "$other_bin" ] && o=$(route_upsert "$other_bin"); e=$(route_upsert "$bin/app/evpipe")
  fi
  cu+=("$c"); eu+=("$e"); reu+=("$(ratio "$e" "$c")")
  [ -n "$other_bin" ] && { ou+=("$o"); rou+=("$(ratio "$o" "$c")"); }
  log "run $r: append sql ${ca[-1]} route ${ea[-1]}; unique sql ${ci[-1]} route ${ei[-1]}; keys sql ${ck[-1]} route ${ek[-1]}; upsert sql ${cu[-1]} route ${eu[-1]}"
done

med() { printf '%s\n' "$@" | median; }
other_head="" other_sep=""
[ -n "$other_bin" ] && { other_head=" $other_bin rows/s | its ratio |"; other_sep="---|---|"; }
table="| case | run | plain SQL rows/s | evpipe route rows/s | ratio |$other_head
|---|---|---|---|---|$other_sep"
# rows NAME C E R O RO: one case's runs and medians (arrays by name)
rows() {
  local name="$1"
  local -n cs="$2" es="$3" rs="$4" os="$5" ros="$6"
  local extra
  for r in $(seq 0 $((runs - 1))); do
    extra=""; [ -n "$other_bin" ] && extra=" ${os[$r]} | ${ros[$r]} |"
    table+="
| $name | $((r + 1)) | ${cs[$r]} | ${es[$r]} | ${rs[$r]} |$extra"
  done
  extra=""; [ -n "$other_bin" ] && extra=" $(med "${os[@]}") | **$(med "${ros[@]}")** |"
  table+="
| $name | median | $(med "${cs[@]}") | $(med "${es[@]}") | **$(med "${rs[@]}")** |$extra"
}
rows "append" ca ea rea oa roa
rows "append, unique index on (device_id, measured_at)" ci ei rei oi roi
rows "append, keys on both sides (SQL: the rows' and their keys' \\copy, one transaction)" ck ek rek ok rok
rows "upsert" cu eu reu ou rou

report="routes vs plain SQL: $events telemetry rows (6 typed columns), $statuses status messages of $devices devices, upsert batches of $batch (append: evpipe's [batch] defaults), $connections connections, $runs runs, $stored_keys keys stored before each append run
append: psql \\copy of the CSV (keys on both sides: and of the rows' keys into evpipe_route_keys, in one transaction); upsert: COPY to temp + INSERT ON CONFLICT WHERE newer, per batch (ratio = evpipe / SQL; medians of each column and of the per-run ratios)
machine: $(machine_line)

$table"
# Where the CPU went per row, medians over the runs (cpu_note).
report+="

CPU per row, medians over the runs (µs; PostgreSQL = every process of the cluster; client = psql or evpipe-load):

| case | writer | PostgreSQL | evpipe | client | all |
|---|---|---|---|---|---|"
while IFS=$'\t' read -r c w; do
  report+="
| $c | $w | $(awk -F'\t' -v c="$c" -v w="$w" '$1 == c && $2 == w {print $3}' "$scratch/cpu" | median) | $(
    awk -F'\t' -v c="$c" -v w="$w" '$1 == c && $2 == w {print $4}' "$scratch/cpu" | median) | $(
    awk -F'\t' -v c="$c" -v w="$w" '$1 == c && $2 == w {print $5}' "$scratch/cpu" | median) | $(
    awk -F'\t' -v c="$c" -v w="$w" '$1 == c && $2 == w {print $3 + $4 + $5}' "$scratch/cpu" | median) |"
done < <(cut -f1,2 "$scratch/cpu" | sort -u)
report+="

evpipe's CPU and minor page faults by thread in the append runs (medians; this: this build, other: --binary):

$(thread_table "$scratch/threads.txt" this:append this:append,unique this:append,keys other:append other:append,unique other:append,keys)"
echo
echo "$report"
[ -n "$out" ] && echo "$report" >"$out"
exit 0
