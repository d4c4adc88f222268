# Shared helpers for scripts/*.sh and perf/*.sh. Source it; do not run it.
#   ensure_packages   install missing Debian packages (as root), or name them
#   build_evpipe TYPE configure and build into build/ (or $EVPIPE_BUILD_DIR)
#   pg_start / pg_stop a private PostgreSQL on loopback in a scratch directory
set -euo pipefail

EVPIPE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EVPIPE_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  mold        # the linker (CMakeLists.txt, EVPIPE_MOLD): CI links over a hundred test executables
  libboost1.81-dev libconcurrentqueue-dev libsimdjson-dev libpq-dev libmimalloc-dev
  libbenchmark-dev libgtest-dev libgmock-dev libtomlplusplus-dev libspdlog-dev libcli11-dev
  libabsl-dev libxxhash-dev libssl-dev
  postgresql postgresql-client mosquitto mosquitto-clients openssl pgbouncer
  clang libclang-rt-14-dev
  python3 procps
  zlib1g-dev  # HTTP source: gzip and deflate request bodies
  libnats-dev nats-server  # NATS JetStream source (io/sources/nats) and its test server
  libre2-dev  # payload schemas: `pattern` (stages/schema)
  libvalijson-dev  # tests only: the reference validator of tests/stages/schema/schema_differential_test
  chromium    # tests only: browser producers (CORS, sendBeacon) in headless Chromium
  rabbitmq-server  # tests only: MQTT interop with RabbitMQ's MQTT plugin (label interop)
  nodejs      # tests only: runs the aedes broker (npm; scripts/test.sh installs npm if the command is missing)
  prometheus libsystemd-dev systemd lintian
  tmux        # tests only: `evpipe top` on a real terminal (top_integration_test)
  curl        # tests and perf only: reads evpipe's SSE stream on loopback (StreamSse, perf/catchup_vs_copy.sh)
  iproute2    # tests only: tc holds back one test's PostgreSQL connections on lo (a server that vanished)
)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_packages() {
  local missing=() p
  for p in "${EVPIPE_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || log "apt-get update failed; trying the install anyway"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build_evpipe TYPE [DIR [extra cmake args...]]: configure and build; sets
# EVPIPE_BUILD_DIR (default build/, or $EVPIPE_BUILD_DIR when set).
build_evpipe() {
  local type="${1:-Release}"
  EVPIPE_BUILD_DIR="${2:-${EVPIPE_BUILD_DIR:-$EVPIPE_ROOT/build}}"
  shift $(( $# > 2 ? 2 : $# ))
  local gen=()
  command -v ninja >/dev/null && [ ! -f "$EVPIPE_BUILD_DIR/CMakeCache.txt" ] && gen=(-G Ninja)
  cmake -S "$EVPIPE_ROOT" -B "$EVPIPE_BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
  log "building ($type) in $EVPIPE_BUILD_DIR"
  cmake --build "$EVPIPE_BUILD_DIR" -j "$(nproc)" >"$EVPIPE_BUILD_DIR/build.log" 2>&1 ||
    { tail -40 "$EVPIPE_BUILD_DIR/build.log" >&2; die "build failed (full log: $EVPIPE_BUILD_DIR/build.log)"; }
}

# http_get PORT PATH: the body of a GET to 127.0.0.1 (bash only, no client
# needed); fails when nothing listens or the status is not 200.
http_get() {
  local reply
  reply="$( { exec 3<>"/dev/tcp/127.0.0.1/$1" &&
              printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3 && cat <&3; } 2>/dev/null)" || return 1
  case "${reply%%$'\r'*}" in *" 200 "*) ;; *) return 1 ;; esac
  printf '%s\n' "${reply#*$'\r\n\r\n'}"
}

# A loopback port that nothing listens on.
free_port() {
  # Never the same port twice in one script ($$ is the script's PID in
  # subshells too).
  local given="/tmp/evpipe-ports.$$" port
  for _ in $(seq 20); do
    # Below the kernel's ephemeral range (32768-60999): a port the kernel
    # picks may be taken as the local port of an outgoing connection (to
    # PostgreSQL, say) before the server it is for binds it.
    port=$((20000 + RANDOM % 12768))
    python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null || continue
    grep -qx "$port" "$given" 2>/dev/null || break
  done
  echo "$port" >>"$given"
  echo "$port"
}

PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"

# Runs a command as the user that owns the private cluster.
as_pg_user() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# pg_start DIR: initdb + start on 127.0.0.1:$PGPORT (a free port), socket in DIR.
# Exports PGHOST PGPORT PGUSER PGDATABASE and EVPIPE_DSN for database "evpipe".
pg_start() {
  local dir="$1"
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$dir"
    chmod 700 "$dir"
  fi
  export PGPORT="${PGPORT:-$(free_port)}"
  export PGHOST=127.0.0.1
  local user
  if [ "$(id -u)" -eq 0 ]; then user=postgres; else user="$(id -un)"; fi
  export PGUSER="$user"
  as_pg_user "$PG_BIN/initdb" -D "$dir/data" -U "$user" -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  # Settings for a scratch cluster; durability stays on (fsync, synchronous_commit)
  # so that what evpipe acks really is committed.
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$dir'
shared_buffers = 512MB
max_wal_size = 4GB
checkpoint_timeout = 30min
wal_buffers = 16MB
# The WAL writer flushes every 10 ms, so a commit finds less WAL to flush
# itself: a smaller tail of plain COPY + commit (docs/performance-limits.md, issue 19).
wal_writer_delay = 10ms
wal_writer_flush_after = 0
max_connections = 100
logging_collector = off
CONF
  as_pg_user "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null ||
    { tail -20 "$dir/postgres.log" >&2; die "PostgreSQL did not start"; }
  PG_SCRATCH="$dir"
  export PGDATABASE=evpipe
  as_pg_user "$PG_BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U "$user" evpipe
  export EVPIPE_DSN="postgresql://$user@127.0.0.1:$PGPORT/evpipe"
  log "PostgreSQL on 127.0.0.1:$PGPORT (data in $dir/data)"
}

pg_stop() {
  [ -n "${PG_SCRATCH:-}" ] && [ -d "$PG_SCRATCH/data" ] || return 0
  as_pg_user "$PG_BIN/pg_ctl" -D "$PG_SCRATCH/data" -m fast -w stop >/dev/null 2>&1 || true
}

# mosquitto_start DIR: Debian's Mosquitto on 127.0.0.1:$MQTT_PORT (a free
# port) with its own config: persistent sessions kept on disk, no limit on
# queued or in-flight messages (evpipe bounds its own in-flight messages).
mosquitto_start() {
  local dir="$1"
  mkdir -p "$dir"
  export MQTT_PORT="${MQTT_PORT:-$(free_port)}"
  cat >"$dir/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $dir/
max_queued_messages 0
max_inflight_messages 0
log_dest file $dir/mosquitto.log
CONF
  # As root, Mosquitto would switch to its own user and lose the scratch dir.
  [ "$(id -u)" -eq 0 ] && echo "user root" >>"$dir/mosquitto.conf"
  /usr/sbin/mosquitto -c "$dir/mosquitto.conf" 2>>"$dir/mosquitto.log" &
  MQTT_PID=$!
  local _
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && { log "Mosquitto on 127.0.0.1:$MQTT_PORT"; return 0; }
    sleep 0.1
  done
  die "Mosquitto did not start (see $dir/mosquitto.log)"
}
mosquitto_stop() {
  [ -n "${MQTT_PID:-}" ] || return 0
  kill "$MQTT_PID" 2>/dev/null && wait "$MQTT_PID" 2>/dev/null || true
  MQTT_PID=""
}

# The kernel's writeback, for the demo and the perf scripts (issue 19, part 4;
# docs/performance-limits.md, "Platform settings and the floor's tail"). By default
# Linux writes a file's dirty pages back once the file has been dirty for 30 s
# (dirty_expire_centisecs, kept per file, not per page) or once 10% of memory
# is dirty. A load that writes the same table files for half a minute then
# gets all of their dirty pages (a gigabyte or more) written back at once,
# and every commit's WAL fsync waits behind that burst: 0.5-1 s stalls around
# second 30 of every run. Writing back early and steadily (16 MiB dirty, 5 s)
# removes them. Machine-wide, so only as root, and cleanup_scratch puts the
# old values back.
writeback_saved=""
vm_write() { { echo "$2" >"/proc/sys/vm/$1"; } 2>/dev/null; }
# writeback_apply [BACKGROUND_BYTES EXPIRE_CS WRITEBACK_CS]: these values (default 16 MiB, 500,
# and the kernel's flusher interval as it is). Where /proc/sys is read-only (a container), says
# so once and leaves the kernel as it is.
writeback_apply() {
  [ "$(id -u)" -eq 0 ] || return 0
  local v=/proc/sys/vm
  [ -n "$writeback_saved" ] ||
    writeback_saved="$(cat $v/dirty_background_bytes $v/dirty_background_ratio $v/dirty_expire_centisecs $v/dirty_writeback_centisecs | tr '\n' ' ')"
  vm_write dirty_background_bytes "${1:-16777216}" && vm_write dirty_expire_centisecs "${2:-500}" &&
    vm_write dirty_writeback_centisecs "${3:-$(echo "$writeback_saved" | cut -d' ' -f4)}" && return 0
  [ -n "${writeback_told:-}" ] || log "the kernel's writeback settings are not writable here: left as they are"
  writeback_told=1
}
writeback_restore() {
  [ -n "$writeback_saved" ] || return 0
  local bytes ratio expire flusher
  read -r bytes ratio expire flusher <<<"$writeback_saved"
  # Writing one of bytes and ratio zeroes the other: write the one that was set.
  if [ "$bytes" -gt 0 ]; then vm_write dirty_background_bytes "$bytes" || true; else vm_write dirty_background_ratio "$ratio" || true; fi
  vm_write dirty_expire_centisecs "$expire" || true
  vm_write dirty_writeback_centisecs "$flusher" || true
}

# scratch_cluster: makes $scratch (a directory the cluster's user can use),
# starts the private PostgreSQL in it, and arranges that on exit the evpipe in
# $evpipe_pid (if any), the cluster and the directory all go away.
scratch_cluster() {
  scratch="$(mktemp -d /tmp/evpipe.XXXXXX)"
  chmod 755 "$scratch"
  evpipe_pid=""
  trap cleanup_scratch EXIT
  pg_start "$scratch/pg"
}
cleanup_scratch() {
  if [ -n "${evpipe_pid:-}" ]; then
    kill "$evpipe_pid" 2>/dev/null && wait "$evpipe_pid" 2>/dev/null || true
  fi
  # Helpers started in a subshell, whose pid only their file keeps (perf/run.sh's tcp-floor).
  local pidfile
  for pidfile in "${scratch:-/nonexistent}"/*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  mosquitto_stop
  pg_stop
  writeback_restore
  rm -f "/tmp/evpipe-ports.$$"
  [ -n "${scratch:-}" ] && rm -rf "$scratch"
}
