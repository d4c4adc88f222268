#!/usr/bin/env bash
# NATS JetStream backlog drain against psql \copy, in one run on one machine
# (issue 14 target: 0.9 or better), and against its floor: the same drain by
# perf/nats_floor.cc (fetch, one COPY that commits, an ack per message, no
# evpipe), with as many threads as evpipe has shards.
#
# Publishes N events (default 200000 of ~400 B, all valid and unique) into a
# JetStream stream on Debian's nats-server (file storage, loopback) with
# evpipe-load --target nats:// while evpipe is not running, then starts evpipe
# with a [[sources.nats]] durable pull consumer and times until every row is
# committed. Beside it, the same rows go into a fresh events_mirror with
# psql \copy, and the same backlog is drained by the floor; the three take
# turns at going first. Prints the rates and the ratios per run, then the
# medians; logs where the CPU went in each (machine busy share, cores used by
# PostgreSQL, evpipe or the floor, and nats-server).
# With --processes "1 2 3", each run also drains the backlog with that many
# evpipe processes on the one durable consumer (issue 14: many processes, one
# table), each with [pipeline] shards = cores.
# --evpipe PATH runs that evpipe binary instead of the build's (to compare two
# builds on one backlog); a process that dies is reported with its signal.
# --callgrind FILE runs the one-process drain's evpipe under valgrind
# --tool=callgrind (profile in FILE; use a small --count: its rate is not one).
# --shards K and --linger-ms L set evpipe's [pipeline] shards (default: one
# per core; the floor gets as many threads) and [batch] linger_ms (default 0).
#   perf/nats_drain.sh [--count N] [--runs R] [--fetch-batch B] [--max-ack-pending P] [--processes "1 2 3"]
#                      [--evpipe PATH] [--callgrind FILE] [--shards K] [--linger-ms L]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

count=200000 runs=3 fetch_batch=512 max_ack_pending=16384 processes="" evbin="" callgrind="" shards=0 linger_ms=0
while [ $# -gt 0 ]; do
  case "$1" in
    --count) count="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --fetch-batch) fetch_batch="$2"; shift 2 ;;
    --max-ack-pending) max_ack_pending="$2"; shift 2 ;;
    --processes) processes="$2"; shift 2 ;;
    --evpipe) evbin="$2"; shift 2 ;;
    --callgrind) callgrind="$(realpath -m "$2")"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    --linger-ms) linger_ms="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

perf_setup "$shards"
printf '[batch]\nlinger_ms = %s\n' "$linger_ms" >>"$scratch/evpipe.toml"
http_on  # the one-process drain logs its rows per committed batch from /metrics
ensure_packages nats-server
evbin="${evbin:-$bin/app/evpipe}"
drain_bin="$evbin"
if [ -n "$callgrind" ]; then
  ensure_packages valgrind
  drain_bin="$scratch/evpipe-callgrind"
  printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s %s "$@"\n' "$callgrind" "$evbin" >"$drain_bin"
  chmod +x "$drain_bin"
fi

# nats-server with JetStream on a loopback port, its storage in the scratch dir.
nats_port="$(free_port)"
mkdir -p "$scratch/nats"
cat >"$scratch/nats/nats.conf" <<CONF
listen: 127.0.0.1:$nats_port
http: 0
log_file: "$scratch/nats/nats.log"
jetstream { store_dir: "$scratch/nats/js", max_memory_store: 64MB, max_file_store: 8GB }
CONF
/usr/sbin/nats-server -c "$scratch/nats/nats.conf" &
nats_pid=$!
trap 'kill "$nats_pid" 2>/dev/null || true; cleanup_scratch' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break; sleep 0.05; done

# The stream is made through the server's JetStream API with the NATS text
# protocol (no nats CLI in Debian): $JS.API.STREAM.CREATE.<name>.
js_api() {
  python3 - "$nats_port" "$1" "$2" <<'PY'
import socket, sys
port, subject, body = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
f.readline()  # INFO
s.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.perf 1\r\n' +
          f"PUB {subject} _INBOX.perf {len(body)}\r\n{body}\r\nPING\r\n".encode())
while True:
    line = f.readline()
    if line.startswith(b"MSG"):
        print(f.read(int(line.split()[-1]) + 2).decode().strip())
        break
PY
}
stream_reset() {
  js_api '$JS.API.STREAM.DELETE.PERF' '' >/dev/null
  js_api '$JS.API.STREAM.CREATE.PERF' '{"name":"PERF","subjects":["perf.>"],"storage":"file"}' | grep -q '"config"' ||
    die "could not create the JetStream stream"
}

cp "$scratch/evpipe.toml" "$scratch/evpipe-tcp.toml"
{ cat "$scratch/evpipe-tcp.toml"
  printf '[[sources.nats]]\nservers = ["nats://127.0.0.1:%s"]\nstream = "PERF"\ndurable = "evpipe"\n' "$nats_port"
  printf 'fetch_batch = %s\nmax_ack_pending = %s\n' "$fetch_batch" "$max_ack_pending"; } >"$scratch/evpipe-nats.toml"

"$bin/load/evpipe-load" --count "$count" --run-id drain --invalid-frac 0 --dup-frac 0 \
  --emit "$scratch/drain.ndjson" --emit-csv "$scratch/drain.csv" 2>/dev/null
rows="$(wc -l <"$scratch/drain.csv")"

# The running evpipe's COPY rows per committed batch, over all shards (its
# /metrics: copy_rows_total / batches_total).
rows_per_batch() {
  http_get "$http_port" /metrics | awk '/^[a-z_]+_copy_rows_total/ {r += $NF} /^[a-z_]+_batches_total/ && !/slow/ {b += $NF}
    END {if (b > 0) printf "%.0f rows per batch (%d batches)", r / b, b; else printf "no batches"}'
}

# nats_drain: fresh table and stream; the backlog is published (evpipe-load
# waits for the stream's acks); evpipe starts and the time until every row is
# committed is measured. Prints "rows/s preload_seconds".
nats_drain() {
  local t0 t1 t2 got
  with_config nats
  fresh_table
  stream_reset
  t0=$(now)
  "$bin/load/evpipe-load" --target "nats://127.0.0.1:$nats_port" --topic perf/nats/drain --input "$scratch/drain.ndjson" \
    --connections 4 --quiet >/dev/null
  t1=$(now)
  local mark; mark="$(cpu_mark)"
  evpipe_start "$drain_bin"
  got="$(rows_when_drained "$rows" 6000 0.05)"
  t2=$(now)
  log "drain, 1 process: $(cpu_since "$mark" "$(echo "$t1 $t2" | awk '{print $2 - $1}')"), $(rows_per_batch)"
  evpipe_stop
  with_config tcp
  [ "$got" = "$rows" ] || die "evpipe committed $got rows from the JetStream backlog, expected $rows"
  echo "$rows $t1 $t2 $t0" | awk '{printf "%.0f %.1f", $1 / ($3 - $2), $2 - $4}'
}

# floor_drain: the same backlog drained by nats-floor (a durable of its own)
# with $shard_count threads, timed the same way. Prints "rows/s".
floor_drain() {
  local t1 t2 got pid
  fresh_table
  stream_reset
  "$bin/load/evpipe-load" --target "nats://127.0.0.1:$nats_port" --topic perf/nats/drain --input "$scratch/drain.ndjson" \
    --connections 4 --quiet >/dev/null
  t1=$(now)
  local mark; mark="$(cpu_mark)"
  "$bin/perf/nats-floor" --dsn "$EVPIPE_DSN" --server "nats://127.0.0.1:$nats_port" --stream PERF \
    --connections "$shard_count" --fetch-batch "$fetch_batch" --max-ack-pending "$max_ack_pending" --count "$rows" \
    >"$scratch/floor.out" 2>&1 &
  pid=$!
  got="$(rows_when_drained "$rows" 6000 0.05 "$pid")"
  t2=$(now)
  local secs used own
  secs="$(echo "$t1 $t2" | awk '{print $2 - $1}')"
  used="$(cpu_since "$mark" "$secs" nats-floor)"
  wait "$pid" || die "nats-floor failed: $(tail -3 "$scratch/floor.out")"
  # It has exited by now (within its fetch timeout of its last commit), taking
  # its CPU time with it: its own report counts.
  own="$(awk -v s="$secs" '/cpu_seconds/ {printf "%.2f", $2 / s}' "$scratch/floor.out")"
  log "drain, floor: $(sed "s/nats-floor [0-9.]*/nats-floor $own/" <<<"$used")"
  [ "$got" = "$rows" ] || die "nats-floor committed $got rows from the JetStream backlog, expected $rows"
  echo "$rows $t1 $t2" | awk '{printf "%.0f", $1 / ($3 - $2)}'
}

# nats_drain_many K: as nats_drain, with K evpipe processes (each its own TCP
# port, the same durable) started together. Prints rows/s.
nats_drain_many() {
  local k="$1" t1 t2 got pids=() ports=()
  with_config nats
  fresh_table
  stream_reset
  "$bin/load/evpipe-load" --target "nats://127.0.0.1:$nats_port" --topic perf/nats/drain --input "$scratch/drain.ndjson" \
    --connections 4 --quiet >/dev/null
  for i in $(seq "$k"); do
    ports+=("$(free_port)")
    # Its own TCP port, and no /metrics listener (the one-process drain's port would clash).
    sed -e "s/127.0.0.1:$tcp_port/127.0.0.1:${ports[-1]}/" -e "s/^listen = \"127.0.0.1:$http_port\"$/listen = \"\"/" \
      "$scratch/evpipe-nats.toml" >"$scratch/evpipe-nats-$i.toml"
  done
  t1=$(now)
  local mark; mark="$(cpu_mark)"
  for i in $(seq "$k"); do
    "$evbin" run --config "$scratch/evpipe-nats-$i.toml" 2>"$scratch/evpipe-$i.log" &
    pids+=("$!")
  done
  got="$(rows_when_drained "$rows" 6000 0.05)"
  t2=$(now)
  log "drain, $k processes: $(cpu_since "$mark" "$(echo "$t1 $t2" | awk '{print $2 - $1}')")"
  for p in "${pids[@]}"; do kill -TERM "$p"; done
  local i=0 rc
  for p in "${pids[@]}"; do
    i=$((i + 1)) rc=0
    wait "$p" || rc=$?
    # 128 + signal: 139 is a SIGSEGV (the libnats 3.4.1 fetch overflow, docs/nats.md).
    [ "$rc" = 0 ] || die "evpipe process $i of $k exited with status $rc$([ "$rc" -gt 128 ] && echo " (signal $((rc - 128)))"): $(tail -3 "$scratch/evpipe-$i.log")"
  done
  # How many processes met the libnats 3.4.1 fetch overflow's trigger (held
  # deliveries of a late pull request) and took them one by one (docs/nats.md).
  log "$k processes: $(grep -l 'late pull request' "$scratch"/evpipe-[0-9]*.log 2>/dev/null | wc -l) of them took deliveries of a late pull request one by one"
  with_config tcp
  [ "$got" = "$rows" ] || die "$k evpipe processes committed $got rows, expected $rows"
  echo "$rows $t1 $t2" | awk '{printf "%.0f", $1 / ($3 - $2)}'
}

echo "# $(machine_line)"
echo "# load average $(cut -d' ' -f1-3 /proc/loadavg) at start; $count events, $(($(stat -c %s "$scratch/drain.ndjson") / count)) B each on average; fetch_batch $fetch_batch, max_ack_pending $max_ack_pending; shards $shard_count, linger_ms $linger_ms"
printf '%-4s %12s %10s %14s %7s %13s %7s %12s' run copy_rows/s preload_s nats_rows/s ratio floor_rows/s ratio evpipe/floor
for k in $processes; do printf ' %14s %7s' "${k}_procs_rows/s" ratio; done
echo
copies=() drains=() floors=()
copy_cpu_log=1  # copy_rate logs where the CPU went, as the drains do
timed_copy() { copy_rate "$scratch/drain.csv" "$rows"; }
for r in $(seq "$runs"); do
  # Each goes first in turn, so that none always meets a warmer cache.
  case $((r % 3)) in
    # (nats_drain into a variable first: a `die` in it then stops the script)
    1) copy="$(timed_copy)"; drained="$(nats_drain)"; floor="$(floor_drain)" ;;
    2) drained="$(nats_drain)"; floor="$(floor_drain)"; copy="$(timed_copy)" ;;
    0) floor="$(floor_drain)"; copy="$(timed_copy)"; drained="$(nats_drain)" ;;
  esac
  read -r rate preload <<<"$drained"
  copies+=("$copy") drains+=("$rate") floors+=("$floor")
  # The row is printed whole once its drains are done: they log on stderr.
  row="$(printf '%-4s %12s %10s %14s %7s %13s %7s %12s' "$r" "$copy" "$preload" "$rate" "$(ratio "$rate" "$copy")" \
    "$floor" "$(ratio "$floor" "$copy")" "$(ratio "$rate" "$floor")")"
  for k in $processes; do
    many="$(nats_drain_many "$k")"
    row+="$(printf ' %14s %7s' "$many" "$(ratio "$many" "$copy")")"
  done
  echo "$row"
done
mc="$(printf '%s\n' "${copies[@]}" | median)" md="$(printf '%s\n' "${drains[@]}" | median)"
mf="$(printf '%s\n' "${floors[@]}" | median)"
printf '%-4s %12.0f %10s %14.0f %7s %13.0f %7s %12s\n' median "$mc" "" "$md" "$(ratio "$md" "$mc")" "$mf" "$(ratio "$mf" "$mc")" \
  "$(ratio "$md" "$mf")"
