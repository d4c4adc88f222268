# Helpers for perf/*.sh, on top of scripts/lib.sh. Source it; do not run it.
#   perf_setup SHARDS        build, private cluster, evpipe config in $scratch
#   fresh_table              drop and re-create events_mirror and dlq_events
#   copy_rate CSV ROWS       rows/s of psql \copy of CSV into a fresh table
#   evpipe_start / evpipe_stop
#   machine_line             cores, memory, CPU, PostgreSQL settings
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

perf_setup() {
  local shards="${1:-0}"
  ensure_packages gnuplot-nox
  build_evpipe Release "$EVPIPE_ROOT/build"
  bin="$EVPIPE_BUILD_DIR"
  scratch_cluster
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

psqlq() { psql -X -q -At -d "$EVPIPE_DSN" "$@"; }
now() { date +%s.%N; }

fresh_table() {
  psqlq -c "DROP TABLE IF EXISTS events_mirror, dlq_events" -c "CHECKPOINT"
  "$bin/app/evpipe" migrate --config "$scratch/evpipe.toml" 2>/dev/null
}

copy_rate() {
  local csv="$1" rows="$2" t0 t1
  chmod 644 "$csv"
  fresh_table
  t0=$(now)
  psqlq -c "\\copy events_mirror (topic, payload) FROM '$csv' WITH (FORMAT csv)" >/dev/null
  t1=$(now)
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
