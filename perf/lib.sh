# Helpers for perf/*.sh, on top of scripts/lib.sh. Source it; do not run it.
#   perf_setup SHARDS        build, private cluster, evpipe config in $scratch
#   fresh_table              drop and re-create events_mirror and dlq_events
#   copy_rate CSV ROWS       rows/s of psql \copy of CSV into a fresh table
#   evpipe_start / evpipe_stop
#   machine_line             cores, memory, CPU, PostgreSQL settings
#   floor_open JSON PREFIX RATE SECONDS [floor-client options]   the latency floor
#   floor_ceiling ROWS K                rows/s of K closed-loop COPY streams
#   stall_seconds LATENCY_TIMELINE      seconds whose max exceeds $stall_ms
#   commit_probe_start PREFIX SECONDS / commit_probe_wait PREFIX / probe_stalls PREFIX   the platform's commit stalls beside an arm
#   latency_time_plot PNG TITLE EVPIPE_CSV FLOOR_CSV [TCP_FLOOR_CSV]   per-second latency, one above the other
#   cpu_mark / cpu_since MARK SECONDS [NAME]   where the CPU went in between (machine, PostgreSQL, evpipe or NAME, nats-server)
#   alternate_pair RUNS FN A B UNIT     A/B runs in alternating order, rates in pair_a and pair_b
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

perf_setup() {
  local shards="${1:-0}"
  ensure_packages gnuplot-nox
  perf_build
  bin="$EVPIPE_BUILD_DIR"
  shard_count=$shards
  [ "$shard_count" -gt 0 ] || shard_count=$(nproc)
  scratch_cluster
  writeback_apply  # as root; restored on exit (scripts/lib.sh)
  tcp_port="$(free_port)"
  cat >"$scratch/evpipe.toml" <<CONF
[pipeline]
shards = $shards
[postgres]
dsn = "$EVPIPE_DSN"
[http]
listen = ""
[log]
level = "warn"
[[sources.tcp]]
listen = "127.0.0.1:$tcp_port"
topic = "perf/tcp"
CONF
}

# http_on: evpipe's metrics and health on a free loopback port ($http_port);
# perf_setup writes `[http] listen = ""`.
http_on() {
  http_port="$(free_port)"
  sed -i "/^\[http\]/{n;s/^listen = \"\"$/listen = \"127.0.0.1:$http_port\"/}" "$scratch/evpipe.toml"
}
# The running evpipe's ($evpipe_pid) resident memory.
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$evpipe_pid/status"; }

# Builds only what the perf scripts run (evpipe, evpipe-load, the floor clients),
# not the tests: the build machine is shared.
perf_build() {
  EVPIPE_BUILD_DIR="${EVPIPE_BUILD_DIR:-$EVPIPE_ROOT/build}"
  local gen=()
  command -v ninja >/dev/null && [ ! -f "$EVPIPE_BUILD_DIR/CMakeCache.txt" ] && gen=(-G Ninja)
  cmake -S "$EVPIPE_ROOT" -B "$EVPIPE_BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
  log "building (Release) evpipe, evpipe-load, floor-client, nats-floor, tcp-floor in $EVPIPE_BUILD_DIR"
  cmake --build "$EVPIPE_BUILD_DIR" -j "$(nproc)" --target evpipe evpipe-load floor-client nats-floor tcp-floor \
    >"$EVPIPE_BUILD_DIR/build.log" 2>&1 ||
    { tail -40 "$EVPIPE_BUILD_DIR/build.log" >&2; die "build failed (full log: $EVPIPE_BUILD_DIR/build.log)"; }
}

psqlq() { psql -X -q -At -d "$EVPIPE_DSN" "$@"; }
now() { date +%s.%N; }

fresh_table() {
  psqlq -c "DROP TABLE IF EXISTS events_mirror, dlq_events" -c "CHECKPOINT"
  "$bin/app/evpipe" migrate --config "$scratch/evpipe.toml" 2>/dev/null
}

copy_rate() {
  local csv="$1" rows="$2" t0 t1 mark
  chmod 644 "$csv"
  fresh_table
  mark="$(cpu_mark)"
  t0=$(now)
  psqlq -c "\\copy events_mirror (topic, payload) FROM '$csv' WITH (FORMAT csv)" >/dev/null
  t1=$(now)
  [ -z "${copy_cpu_log:-}" ] || log "psql \\copy: $(cpu_since "$mark" "$(echo "$t0 $t1" | awk '{print $2 - $1}')") (psql itself not counted)"
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$rows" ] || die "psql \\copy loaded a wrong row count"
  echo "$rows $t0 $t1" | awk '{printf "%.0f", $1 / ($3 - $2)}'
}

evpipe_start() {
  local evbin="${1:-$bin/app/evpipe}"
  "$evbin" run --config "$scratch/evpipe.toml" 2>"$scratch/evpipe.log" &
  evpipe_pid=$!
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$tcp_port") 2>/dev/null && return 0
    kill -0 "$evpipe_pid" 2>/dev/null || die "evpipe did not start: $(tail -3 "$scratch/evpipe.log")"
    sleep 0.05
  done
  die "evpipe did not listen in time"
}

evpipe_stop() {
  kill -TERM "$evpipe_pid"
  wait "$evpipe_pid" || die "evpipe exited non-zero: $(tail -3 "$scratch/evpipe.log")"
  evpipe_pid=""
}

json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d' + sys.argv[2]))" "$1" "$2"; }

machine_line() {
  echo "$(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), PostgreSQL $(psqlq -c 'SHOW server_version'), shared_buffers $(psqlq -c 'SHOW shared_buffers'), synchronous_commit $(psqlq -c 'SHOW synchronous_commit'), fsync $(psqlq -c 'SHOW fsync')"
}

# mqtt_setup: Mosquitto on loopback, and two more evpipe configs next to
# $scratch/evpipe.toml: evpipe-mqtt.toml subscribes to that broker,
# evpipe-serve.toml to evpipe-load playing the broker on $serve_port.
mqtt_setup() {
  mosquitto_start "$scratch/mqtt"
  serve_port="$(free_port)"
  cp "$scratch/evpipe.toml" "$scratch/evpipe-tcp.toml"
  { cat "$scratch/evpipe-tcp.toml"; printf '[[sources.mqtt]]\nurl = "mqtt://127.0.0.1:%s"\nclient_id = "evpipe-perf-drain"\ntopics = ["perf/mqtt/#"]\n' "$MQTT_PORT"; } \
    >"$scratch/evpipe-mqtt.toml"
  { cat "$scratch/evpipe-tcp.toml"; printf '[[sources.mqtt]]\nurl = "mqtt://127.0.0.1:%s"\nclient_id = "evpipe-perf-serve"\ntopics = ["perf/mqtt/#"]\nbase_ms = 10\nmax_ms = 50\n' "$serve_port"; } \
    >"$scratch/evpipe-serve.toml"
}

# with_config NAME: evpipe_start/evpipe_stop and fresh_table use evpipe-NAME.toml.
with_config() { cp "$scratch/evpipe-$1.toml" "$scratch/evpipe.toml"; }

# rows_when_drained ROWS TRIES PAUSE: polls events_mirror every PAUSE seconds,
# at most TRIES times, until it holds ROWS rows; prints the count it reached.
# The poll must not take CPU from the drain it times (2 cores): one psql
# session instead of one per poll, and max(id), one probe of the primary key,
# instead of count(*), which reads the whole table (at 20 polls a second on
# 200,000 rows that was a busy PostgreSQL backend beside the drain). The
# count runs once max(id) says every row may be there: ids are handed out
# before commit, so a shard's higher ids can be visible before another's.
# rows_when_drained ROWS TRIES PAUSE [PID]: with PID, the poll also ends when
# that process has exited (a writer that failed).
rows_when_drained() {
  local rows="$1" tries="$2" pause="$3" watch="${4:-}" got=0
  coproc drain_poll { psql -X -q -At -d "$EVPIPE_DSN" 2>&1; }
  for _ in $(seq "$tries"); do
    echo "SELECT CASE WHEN coalesce(max(id), 0) >= $rows THEN (SELECT count(*) FROM events_mirror) ELSE 0 END FROM events_mirror;" \
      >&"${drain_poll[1]}"
    read -r got <&"${drain_poll[0]}" || break
    [ "$got" -ge "$rows" ] 2>/dev/null && break
    [ -z "$watch" ] || kill -0 "$watch" 2>/dev/null || break
    sleep "$pause"
  done
  eval "exec ${drain_poll[1]}>&-"
  wait "$drain_poll_PID" 2>/dev/null || true
  psqlq -c 'SELECT count(*) FROM events_mirror'
}

# cpu_mark: CPU time so far, for cpu_since. Prints "busy all postgres
# evpipe nats" in clock ticks: the machine's busy and total ticks
# (/proc/stat), this cluster's PostgreSQL (the postmaster, its live children,
# and the children it has reaped: backends of closed connections), and the
# live evpipe and nats-server processes of this run (their command lines name
# $scratch; other evpipes on the machine are not counted; an evpipe is any
# binary whose name starts with "evpipe" running "run", so another build counts).
cpu_mark() {
  python3 - "$PG_SCRATCH/data/postmaster.pid" "$scratch" <<'PY'
import os, sys
def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    comm = s[s.index("(") + 1:s.rindex(")")]
    rest = s[s.rindex(")") + 2:].split()
    return comm, int(rest[1]), [int(x) for x in rest[11:15]]  # ppid; utime stime cutime cstime
with open("/proc/stat") as f:
    t = [int(x) for x in f.readline().split()[1:9]]
busy, total = t[0] + t[1] + t[2] + t[5] + t[6] + t[7], sum(t)
try:
    pm = int(open(sys.argv[1]).readline())
except OSError:
    pm = -1
pg = ev = nats = 0
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        comm, ppid, (u, s, cu, cs) = stat(d)
    except (OSError, ValueError):
        continue
    if int(d) == pm:
        pg += u + s + cu + cs
    elif ppid == pm:
        pg += u + s
    else:
        # evpipe by its command line ("run" with a config in $scratch), so that
        # another build (--evpipe /tmp/evpipe-old) counts too; nats-server by name.
        try:
            argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        ours = sys.argv[2].encode() in b" ".join(argv)
        if ours and len(argv) > 1 and argv[1] == b"run" and os.path.basename(argv[0]).startswith(b"evpipe"):
            ev += u + s
        elif ours and comm == "nats-server":
            nats += u + s
print(busy, total, pg, ev, nats)
PY
}

# cpu_since MARK SECONDS [NAME]: what ran between cpu_mark's MARK and now,
# over the SECONDS of wall time between them: the machine's busy share, and
# the cores PostgreSQL, evpipe (NAME: the label of that column) and
# nats-server used on average. Measure before evpipe stops: an exited
# evpipe takes its CPU time with it.
cpu_since() {
  local now; now="$(cpu_mark)"
  echo "$1 $now $2 $(getconf CLK_TCK) ${3:-evpipe}" | awk '{
    hz = $12; s = $11
    printf "machine busy %.0f%%, PostgreSQL %.2f cores, " $13 " %.2f, nats-server %.2f", \
      100 * ($6 - $1) / ($7 - $2), ($8 - $3) / hz / s, ($9 - $4) / hz / s, ($10 - $5) / hz / s }'
}

# cpu_ticks_since MARK: "postgres evpipe" clock ticks used since cpu_mark's
# MARK (measure before evpipe stops).
cpu_ticks_since() {
  local now; now="$(cpu_mark)"
  echo "$1 $now" | awk '{print $8 - $3, $9 - $4}'
}

# thread_mark PID: "tid name minflt utime stime" of every thread of PID (the
# name is what comes between the parentheses of /proc/PID/task/TID/stat).
thread_mark() {
  local t
  for t in /proc/"$1"/task/*/stat; do
    sed -E 's/^([0-9]+) \((.*)\) [A-Za-z] (.*)$/\1 \2 \3/' "$t" 2>/dev/null |
      awk '{print $1, $2, $9, $13, $14}'
  done
}
# thread_note MARK_FILE PID N TAG: one line "TAG thread CPU_ns_per_event
# minor_faults_per_1000_events" per thread name, over the N events since
# thread_mark's MARK_FILE (shard-N sums the shards, io-N the io threads).
thread_note() {
  thread_mark "$2" | awk -v hz="$(getconf CLK_TCK)" -v n="$3" -v tag="$4" \
    'NR == FNR {f[$1] = $3; u[$1] = $4; s[$1] = $5; next}
    ($1 in f) {name = $2; sub(/-[0-9]+$/, "-N", name); dc[name] += ($4 - u[$1] + $5 - s[$1]) / hz * 1e9 / n;
               df[name] += ($3 - f[$1]) * 1000 / n}
    END {for (k in dc) if (dc[k] > 0 || df[k] > 0) printf "%s %s %.0f %.1f\n", tag, k, dc[k], df[k]}' "$1" -
}
# thread_table FILE [TAGS...]: the medians of thread_note's lines in FILE, by
# tag and thread, as a Markdown table.
thread_table() {
  local file="$1" which t c f; shift
  echo "| build | thread | CPU ns/event | minor faults / 1k events |"
  echo "|---|---|---|---|"
  for which in "$@"; do
    for t in $(awk -v w="$which" '$1 == w {print $2}' "$file" | sort -u); do
      c=$(awk -v w="$which" -v t="$t" '$1 == w && $2 == t {print $3}' "$file" | median)
      f=$(awk -v w="$which" -v t="$t" '$1 == w && $2 == t {print $4}' "$file" | median)
      printf '| %s | %s | %.0f | %.1f |\n' "$which" "$t" "$c" "$f"
    done
  done
}

# mqtt_drain NDJSON ROWS: fresh table; evpipe subscribes once and stops; every
# line of NDJSON is published at QoS 1 to Mosquitto (evpipe-load waits for the
# broker's PUBACKs); evpipe starts and the time until ROWS rows are committed
# is measured. Prints "rows/s preload_seconds".
mqtt_drain() {
  local ndjson="$1" rows="$2" t0 t1 t2 got
  with_config mqtt
  fresh_table
  evpipe_start
  sleep 1   # its session and subscription now exist in the broker
  evpipe_stop
  t0=$(now)
  "$bin/load/evpipe-load" --target "mqtt://127.0.0.1:$MQTT_PORT" --topic perf/mqtt/drain --input "$ndjson" \
    --quiet >/dev/null
  t1=$(now)
  evpipe_start
  got="$(rows_when_drained "$rows" 3000 0.2)"
  t2=$(now)
  evpipe_stop
  with_config tcp
  [ "$got" = "$rows" ] || die "evpipe committed $got rows from the MQTT backlog, expected $rows"
  echo "$rows $t0 $t1 $t2" | awk '{printf "%.0f %.1f", $1 / ($4 - $3), $3 - $2}'
}

# mqtt_serve JSON [evpipe-load options]: fresh table; evpipe-load plays the
# broker for evpipe's MQTT session; its figures (acks are evpipe's PUBACKs)
# go to JSON.
mqtt_serve() {
  local json="$1"
  shift
  with_config serve
  fresh_table
  evpipe_start
  "$bin/load/evpipe-load" --target "mqtt-serve://127.0.0.1:$serve_port" --topic perf/mqtt/serve --quiet \
    --json "$json" "$@" >/dev/null
  evpipe_stop
  with_config tcp
}

# The floor and the ceiling (perf/floor_client.cc): plain libpq COPY into the
# same events_mirror, no evpipe in between.
# floor_open JSON PREFIX RATE SECONDS [options]: fresh table, then the floor
# client open loop at RATE for SECONDS with one connection per shard;
# PREFIX.timeline.csv and PREFIX.latency.csv next to JSON.
floor_open() {
  local json="$1" prefix="$2" r="$3" secs="$4"
  shift 4
  fresh_table
  "$bin/perf/floor-client" --dsn "$EVPIPE_DSN" --connections "$shard_count" --rate "$r" --duration "$secs" \
    --quiet --json "$json" --hdr "$prefix.hdr" --timeline "$prefix.timeline.csv" \
    --latency-timeline "$prefix.latency.csv" "$@" >"$prefix.txt" ||
    die "floor-client failed: $(tail -2 "$prefix.txt")"
}

# floor_ceiling ROWS K: rows/s of ROWS rows COPYed over K connections, as fast
# as PostgreSQL takes them (one COPY per stream, like psql \copy), into a
# fresh table.
floor_ceiling() {
  local rows="$1" k="$2"
  fresh_table
  local mark; mark="$(cpu_mark)"
  "$bin/perf/floor-client" --dsn "$EVPIPE_DSN" --connections "$k" --rate max --count "$rows" --quiet \
    --json "$scratch/ceiling.json" >"$scratch/ceiling.txt" || die "floor-client failed: $(tail -2 "$scratch/ceiling.txt")"
  # PostgreSQL's clock ticks for these rows (the caller reads it: this runs in $(...)).
  cpu_ticks_since "$mark" | awk '{print $1}' >"$scratch/ceiling.pg_ticks"
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$rows" ] || die "floor-client stored a wrong row count"
  printf '%.0f' "$(json_field "$scratch/ceiling.json" "['throughput']")"
}

# A platform stall: a second in which even the floor client (no evpipe) kept
# some row waiting longer than stall_ms (default 50 ms; the floor's p99 on an
# idle machine is a few ms). stall_seconds CSV prints those seconds
# ("3:212ms 17:88ms"), nothing when there were none.
stall_ms="${stall_ms:-50}"
stall_seconds() {
  awk -F, -v t="$stall_ms" 'NR > 1 && $6 > t {printf "%s%d:%.0fms", sep, $1, $6; sep=" "}' "$1"
}

# commit_probe_start PREFIX SECONDS / commit_probe_wait PREFIX / probe_stalls
# PREFIX: a witness of the platform's commit stalls in the minute an arm runs,
# whatever the arm is. A one-row INSERT commits $probe_rate times a second
# (pgbench, one connection, open loop) for SECONDS beside the arm; PREFIX.log
# gets each second's transactions and their max latency in µs from the
# intended start (pgbench's aggregate log: epoch second, count, sum, sum of
# squares, min, max, ...). Start it before the arm's set-up with SECONDS = the
# load's duration plus a few for the set-up, and wait for it right after the
# arm: commit_probe_wait takes the arm's end as the load's end, and the load's
# measured window as the last $latency_seconds - $warmup seconds before it
# (to a second or two: the arm stops its server after the load). A second of
# that window in which the INSERT waited over $stall_ms ms is a stall of the
# platform's: the probe does nothing an arm could hold up but compete for the
# cores and the WAL. probe_stalls prints those seconds, counted from the
# load's start as in the latency timelines ("34:141ms"), nothing when none,
# "off" with --probe-rate 0 and "not run" for an arm without a probe.
probe_rate="${probe_rate:-50}"
commit_probe_start() {
  probe_pid=""
  [ "$probe_rate" != 0 ] || return 0
  local prefix
  prefix="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"  # the caller's --out may be relative
  psqlq -c "SET client_min_messages = warning; CREATE TABLE IF NOT EXISTS perf_commit_probe (t timestamptz)"
  printf 'INSERT INTO perf_commit_probe VALUES (now());\n' >"$scratch/commit-probe.sql"
  rm -f "$prefix".log "$prefix".log.* "$prefix".window
  "$PG_BIN/pgbench" -n -c 1 -R "$probe_rate" -T "$2" -f "$scratch/commit-probe.sql" -l --aggregate-interval 1 \
    --log-prefix "$prefix.log" "$EVPIPE_DSN" >"$prefix.txt" 2>&1 &
  probe_pid=$!
  echo "$probe_pid" >"$scratch/commit-probe.pid"  # for cleanup_scratch, should the run fail
}
commit_probe_wait() {
  [ -n "$probe_pid" ] || return 0
  local ended
  ended=$(date +%s)
  wait "$probe_pid" || die "the commit probe (pgbench) failed: $(tail -2 "$1.txt")"
  rm -f "$scratch/commit-probe.pid"
  probe_pid=""
  compgen -G "$1.log.*" >/dev/null || die "the commit probe (pgbench) wrote no log ($1.log.*)"
  cat "$1".log.* >"$1.log"
  rm -f "$1".log.*
  echo "$((ended - latency_seconds)) $warmup $ended" >"$1.window"
}
probe_stalls() {
  [ "$probe_rate" != 0 ] || { echo "off"; return 0; }
  [ -e "$1.log" ] && [ -e "$1.window" ] || { echo "not run"; return 0; }
  local start warm ended
  read -r start warm ended <"$1.window"
  awk -v t="$stall_ms" -v start="$start" -v warm="$warm" -v ended="$ended" \
    '$1 >= start + warm && $1 < ended && $6 / 1000 > t {printf "%s%d:%.0fms", sep, $1 - start + 1, $6 / 1000; sep=" "}' "$1.log"
}

# latency_time_plot PNG TITLE EVPIPE_CSV FLOOR_CSV [TCP_FLOOR_CSV]: per-second p99 and max
# over time, evpipe above, the TCP floor (when given) and the floor below, same axes.
latency_time_plot() {
  local png="$1" title="$2" ev="$3" fl="$4" tf="${5:-}" ymax rows=2
  [ -n "$tf" ] && rows=3
  ymax=$(awk -F, 'FNR > 1 && $6 > m {m = $6} END {print (m > 0 ? m * 1.1 : 1)}' "$ev" "$fl" ${tf:+"$tf"})
  {
    cat <<GP
set terminal pngcairo size 900,$((320 * rows))
set output '$png'
set datafile separator ','
set multiplot layout $rows,1 title '$title'
set grid; set key top right; set yrange [0:$ymax]; set ylabel 'latency (ms)'
set title 'evpipe (intended send to ack)'
plot '$ev' using 1:4 every ::1 with lines lw 2 title 'p99', '' using 1:6 every ::1 with lines lw 1 title 'max'
GP
    [ -z "$tf" ] || cat <<GP
set title 'TCP floor: the same load into tcp-floor (intended send to ack)'
plot '$tf' using 1:4 every ::1 with lines lw 2 title 'p99', '' using 1:6 every ::1 with lines lw 1 title 'max'
GP
    cat <<GP
set title 'floor client (intended send to commit)'; set xlabel 'seconds'
plot '$fl' using 1:4 every ::1 with lines lw 2 title 'p99', '' using 1:6 every ::1 with lines lw 1 title 'max'
unset multiplot
GP
  } >"$png.gp"
  gnuplot "$png.gp" 2>"$png.log" || log "gnuplot failed: $(tail -2 "$png.log")"
}

# alternate_pair RUNS FN A B UNIT: RUNS times `FN A` and `FN B` (each prints
# a rate), A first in odd runs and B first in even ones, so that other load
# on the machine and a warmer cache fall on both alike; logs each run and
# leaves the rates in the arrays pair_a and pair_b.
alternate_pair() {
  local runs="$1" fn="$2" a="$3" b="$4" unit="$5" r
  pair_a=() pair_b=()
  for r in $(seq "$runs"); do
    if [ $((r % 2)) = 1 ]; then
      pair_a+=("$("$fn" "$a")"); pair_b+=("$("$fn" "$b")")
    else
      pair_b+=("$("$fn" "$b")"); pair_a+=("$("$fn" "$a")")
    fi
    log "run $r: $a ${pair_a[-1]} $unit, $b ${pair_b[-1]} $unit"
  done
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (b > 0) printf "%.2f", a/b; else printf "-"}'; }
