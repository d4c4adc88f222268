#!/usr/bin/env bash
# evpipe's CPU per event on the bulk path (issue 19, part 3).
#  - time: N events loaded closed loop over TCP (evpipe-load, C connections),
#    evpipe's own user and system CPU over the load (/proc/PID/stat), as ns per
#    event; R runs. With --binary OTHER, OTHER and this build alternate
#    (A B, B A, ...) on the same cluster: a before/after table with medians.
#  - --callgrind N: one run of N events with evpipe under valgrind's callgrind
#    (user-space instructions, no system time; deterministic, so it needs no
#    quiet machine): instructions per event in all, and the inclusive share of
#    the functions that stand for each step (read and frame, validate, dedup,
#    hand-off, COPY encode and write, ack). Repeat with --binary for a
#    before/after of the same kind.
# PostgreSQL and the load generator run on the same cores and are not counted.
# Starts and stops its own PostgreSQL.
#
# Results (the tables, callgrind's files and annotations) in DIR
# (--out DIR, default perf/results/cpu-<date-time>).
#
#  - --warm W: each timed run first loads W other events (their own keys) and
#    measures only the load after them: the steady state, without the
#    first-touch costs of a fresh process (page faults of new memory).
#  - --rate R: the load is open loop at R events/s instead of closed loop (the
#    same events, the same measurement): CPU per event at a steady rate, where
#    per-read and per-commit work is spread over a few events each (the
#    callgrind run too, whose rate must then be low enough for evpipe under
#    valgrind to keep up).
#  - per thread: each run's CPU and minor faults by thread name go to
#    DIR/threads.txt, with medians at the end of the output (shard-N sums the
#    shards; the main thread, which runs the I/O with one io thread, carries
#    the binary's name).
#
#   perf/cpu_per_event.sh [--events N] [--runs R] [--shards S] [--connections C]
#                         [--warm W] [--rate R] [--binary OTHER_EVPIPE] [--callgrind N] [--out DIR]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

events=200000 runs=5 shards=2 connections=4 other="" callgrind=0 out="" warm=0 rate=max
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --binary) other="$(realpath "$2")"; shift 2 ;;
    --callgrind) callgrind="$2"; shift 2 ;;
    --warm) warm="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -z "$other" ] || [ -x "$other" ] || die "--binary $other is not an executable"
out="${out:-$EVPIPE_ROOT/perf/results/cpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"

perf_setup "$shards"
this="$bin/app/evpipe"
hz=$(getconf CLK_TCK)
fresh_table
# The same events in every run: generated once, loaded from the file.
"$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --count "$events" --run-id cpu \
  --emit "$scratch/events.ndjson" --quiet >/dev/null
[ "$warm" = 0 ] || "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --count "$warm" --run-id warm \
  --emit "$scratch/warm.ndjson" --quiet >/dev/null
load() {  # load [FILE]: every event of the file, at --rate (closed loop by default), waits for every ack
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "${1:-$scratch/events.ndjson}" \
    --connections "$connections" --rate "$rate" --quiet >/dev/null
}
stat_field() { awk -v f="$2" '{print $f}' "/proc/$1/stat"; }
# Context switches (voluntary + involuntary) of every thread of PID.
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }
# One timed run of EVPIPE: prints "user_ns_per_event sys_ns_per_event
# events_per_s minor_faults_per_1000_events switches_per_1000_events".
timed_run() {
  local evbin="$1" u0 s0 u1 s1 f0 f1 c0 c1 t0 t1
  fresh_table
  evpipe_start "$evbin"
  [ "$warm" = 0 ] || load "$scratch/warm.ndjson"
  thread_mark "$evpipe_pid" >"$scratch/threads.0"
  u0=$(stat_field "$evpipe_pid" 14) s0=$(stat_field "$evpipe_pid" 15) f0=$(stat_field "$evpipe_pid" 10)
  c0=$(switches "$evpipe_pid") t0=$(now)
  load
  u1=$(stat_field "$evpipe_pid" 14) s1=$(stat_field "$evpipe_pid" 15) f1=$(stat_field "$evpipe_pid" 10)
  c1=$(switches "$evpipe_pid") t1=$(now)
  thread_note "$scratch/threads.0" "$evpipe_pid" "$events" "$2" >>"$out/threads.txt"
  evpipe_stop
  [ "$(psqlq -c 'SELECT count(*) FROM events_mirror')" = "$((events + warm))" ] || die "a run stored a wrong row count"
  awk -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v hz="$hz" -v n="$events" -v t0="$t0" -v t1="$t1" \
    -v f="$((f1 - f0))" -v c="$((c1 - c0))" \
    'BEGIN {printf "%.0f %.0f %.0f %.1f %.1f\n", u / hz * 1e9 / n, s / hz * 1e9 / n, n / (t1 - t0), f * 1000 / n, c * 1000 / n}'
}

# Inclusive instructions of the functions that stand for each step, from
# callgrind_annotate --inclusive=yes (symbol names as GCC emits them).
callgrind_run() {
  local evbin="$1" name="$2" cg="$out/callgrind.$2.out"
  fresh_table
  # Counted only from the moment evpipe listens until the load is acked:
  # start-up (e.g. the dedup windows' allocation) is no cost per event.
  valgrind --tool=callgrind --callgrind-out-file="$cg" --separate-threads=no --instr-atstart=no \
    "$evbin" run --config "$scratch/evpipe.toml" 2>"$scratch/evpipe-$name.log" &
  evpipe_pid=$!
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$tcp_port") 2>/dev/null && break
    kill -0 "$evpipe_pid" 2>/dev/null || die "evpipe under callgrind did not start: $(tail -3 "$scratch/evpipe-$name.log")"
    sleep 0.1
  done
  head -n "$callgrind" "$scratch/events.ndjson" >"$scratch/events-cg.ndjson"
  callgrind_control -i on "$evpipe_pid" >/dev/null
  "$bin/load/evpipe-load" --target "tcp://127.0.0.1:$tcp_port" --input "$scratch/events-cg.ndjson" \
    --connections "$connections" --rate "$rate" --quiet >/dev/null
  callgrind_control -i off "$evpipe_pid" >/dev/null
  evpipe_stop
  callgrind_annotate --inclusive=yes --threshold=100 "$cg" >"$out/callgrind.$name.txt" 2>/dev/null
  python3 - "$out/callgrind.$name.txt" "$callgrind" "$name" <<'PY'
import re, sys
path, n, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
total, rows = 0, []
for line in open(path, errors="replace"):
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+PROGRAM TOTALS", line) or re.match(r"\s*([\d,]+)\s+PROGRAM TOTALS", line)
    if m:
        total = int(m.group(1).replace(",", ""))
        continue
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\*\s+)?(.*)", line)
    if m:
        rows.append((int(m.group(1).replace(",", "")), m.group(3)))
steps = [
    ("read from sockets (recv)", r"\b(__libc_recv|recv|read)\b"),
    ("intake: frame, validate, key, route", r"evpipe::pipeline::intake::"),
    ("  validate (envelope)", r"evpipe::stages::validate|validate_event"),
    ("shard: dedup", r"evpipe::stages::dedup_window::insert"),
    ("sink: COPY encode and write", r"evpipe::io::postgres_sink::write"),
    ("  libpq send", r"\bPQputCopyData\b|\bpqsecure_write\b|\bpqSendSome\b"),
    ("ack: outcomes to sources", r"evpipe::pipeline::ack_tracker|deliver_outcomes|complete_outcomes"),
    ("malloc/free", r"^(malloc|free|operator new|operator delete|_int_malloc|_int_free)\b"),
]
print(f"{name}: {total:,} instructions for {n:,} events = {total / n:,.0f} per event")
for label, pat in steps:
    hits = [(ir, fn) for ir, fn in rows if re.search(pat, fn)]
    if not hits:
        continue
    ir, fn = max(hits)
    print(f"  {label:38s} {ir / n:8,.0f} per event  ({fn[:90]})")
PY
}

if [ "$callgrind" -gt 0 ]; then
  command -v valgrind >/dev/null || ensure_packages valgrind
  echo "machine: $(machine_line)"
  echo "command: perf/cpu_per_event.sh --callgrind $callgrind --shards $shards --connections $connections$([ "$rate" = max ] || echo " --rate $rate")${other:+ --binary $other}"
  callgrind_run "$this" this
  [ -z "$other" ] || callgrind_run "$other" other
  echo "annotations: $out/callgrind.*.txt"
  exit 0
fi

results="$out/runs.txt"
: >"$results"
for r in $(seq "$runs"); do
  order=(this)
  [ -z "$other" ] || { if [ $((r % 2)) = 1 ]; then order=(other this); else order=(this other); fi; }
  for which in "${order[@]}"; do
    evbin="$this"; [ "$which" = other ] && evbin="$other"
    echo "$which $r $(timed_run "$evbin" "$which")" >>"$results"
    log "run $r $which: $(tail -1 "$results" | cut -d' ' -f3-) (user ns, sys ns per event; events/s; minor faults, context switches per 1,000 events)"
  done
done

echo "machine: $(machine_line)"
echo "command: perf/cpu_per_event.sh --events $events --runs $runs --shards $shards --connections $connections$([ "$warm" = 0 ] || echo " --warm $warm")$([ "$rate" = max ] || echo " --rate $rate")${other:+ --binary $other}"
echo
echo "| build | run | user ns/event | system ns/event | CPU ns/event | events/s | minor faults / 1k events | switches / 1k events |"
echo "|---|---|---|---|---|---|---|---|"
for which in this other; do
  grep -q "^$which " "$results" || continue
  awk -v w="$which" '$1 == w {printf "| %s | %d | %d | %d | %d | %d | %.1f | %.1f |\n", w, $2, $3, $4, $3 + $4, $5, $6, $7}' "$results"
  u=$(awk -v w="$which" '$1 == w {print $3}' "$results" | median)
  s=$(awk -v w="$which" '$1 == w {print $4}' "$results" | median)
  c=$(awk -v w="$which" '$1 == w {print $3 + $4}' "$results" | median)
  e=$(awk -v w="$which" '$1 == w {print $5}' "$results" | median)
  f=$(awk -v w="$which" '$1 == w {print $6}' "$results" | median)
  x=$(awk -v w="$which" '$1 == w {print $7}' "$results" | median)
  printf '| %s | median | %.0f | %.0f | **%.0f** | %.0f | %.1f | %.1f |\n' "$which" "$u" "$s" "$c" "$e" "$f" "$x"
done
if [ -n "$other" ]; then
  a=$(awk '$1 == "this" {print $3 + $4}' "$results" | median)
  b=$(awk '$1 == "other" {print $3 + $4}' "$results" | median)
  echo
  echo "CPU per event, this build / the other: $(ratio "$a" "$b")"
fi
echo
echo "By thread (medians over the runs; shard-N and io-N are the sum of all shards or io threads):"
thread_table "$out/threads.txt" this other
